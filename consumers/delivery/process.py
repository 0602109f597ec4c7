"""One delivery worker process: its settings checked, its resources built, run until stopped.

:func:`run_notify_worker` (``sidestream worker run notify``, ``python -m
consumers.delivery``) refuses local-only secrets and switches in production, builds the
Postgres pool, the HTTP client, the channels (:func:`build_channels`), the dead-letter
producer and the ``/metrics`` server, and runs a
:class:`~consumers.delivery.worker.DeliveryWorker` (the loop itself) until ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from typing import Any

import httpx
import psycopg
from prometheus_client import REGISTRY, CollectorRegistry
from psycopg_pool import AsyncConnectionPool

from consumers.delivery.channel import Channel
from consumers.delivery.config import LOCAL_SIGNING_SECRET, DeliveryConfig
from consumers.delivery.dead_letters import NotificationDeadLetters
from consumers.delivery.endpoints import LOCAL_ENDPOINT_SECRETS_KEY
from consumers.delivery.metrics import DeliveryMetrics
from consumers.delivery.smtp import EmailChannel, SmtpOptions
from consumers.delivery.store import NotificationStore
from consumers.delivery.targets import Resolver, TargetGuard
from consumers.delivery.templates import TemplateRegistry, default_templates
from consumers.delivery.webhook import WebhookChannel, new_http_client
from consumers.delivery.worker import DeliveryWorker
from runtime import ConfigError, ObservabilityServer, Settings
from runtime.clients import kafka_producer, kafka_reachable
from runtime.lifecycle import ExitStatus, stop_on_signals

logger = logging.getLogger(__name__)


def delivery_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-notify"


def build_channels(
    config: DeliveryConfig,
    *,
    http: httpx.AsyncClient,
    templates: TemplateRegistry,
    guard: TargetGuard,
) -> dict[str, Channel]:
    """The email and webhook channels configured by ``config``; ``http`` should be
    built with the same ``guard`` (:func:`~consumers.delivery.webhook.new_http_client`)."""
    smtp = SmtpOptions(
        host=config.smtp_host,
        port=config.smtp_port,
        username=config.smtp_username,
        password=config.smtp_password,
        starttls=config.smtp_starttls,
        sender=config.smtp_from,
        timeout_s=config.smtp_timeout_s,
        message_id_domain=config.message_id_domain,
    )
    return {
        "EMAIL": EmailChannel(options=smtp, templates=templates),
        "WEBHOOK": WebhookChannel(
            client=http,
            signing_secret=config.webhook_signing_secret,
            secret_box=config.secret_box(),
            guard=guard,
            timeout_s=config.webhook_timeout_s,
        ),
    }


def run_notify_worker(
    settings: Settings,
    *,
    stop: threading.Event,
    registry: CollectorRegistry = REGISTRY,
    schema: str | None = None,
    config: DeliveryConfig | None = None,
    templates: TemplateRegistry | None = None,
    dead_letter_topic: str | None = None,
    worker_id: str | None = None,
    install_signal_handlers: bool = False,
    serve_metrics: bool = True,
    resolver: Resolver | None = None,
) -> ExitStatus:
    """Run one delivery worker (``sidestream worker run notify``) until ``stop`` is set.

    ``schema`` defaults to ``settings.postgres_schema``; ``config`` to
    :meth:`DeliveryConfig.from_settings` (not ready after
    ``settings.consumer_retry_deadline_s``); ``templates`` to the built-in ones;
    ``dead_letter_topic`` to ``sidestream.notifications.dlq``. With ``serve_metrics``
    it serves ``/metrics``, ``/healthz`` and ``/readyz`` on the settings' metrics address
    (ready: Postgres answered recently and the dead-letter producer reaches Kafka).
    With Postgres away at start it retries until it answers or ``stop`` is set.
    ``resolver`` replaces the system resolver of the webhook SSRF guard (tests).
    """
    if config is None:
        try:
            config = DeliveryConfig.from_settings(settings).replace(
                unready_after_s=settings.consumer_retry_deadline_s
            )
        except ValueError as exc:
            raise ConfigError(f"invalid SIDESTREAM_DELIVERY_* settings: {exc}") from exc
    production = settings.profile == "production"
    if production and config.webhook_signing_secret == LOCAL_SIGNING_SECRET:
        raise ConfigError(
            "the webhook signing secret is the local default; set "
            "SIDESTREAM_DELIVERY_WEBHOOK_SIGNING_SECRET in production"
        )
    if production and config.endpoint_secrets_key == LOCAL_ENDPOINT_SECRETS_KEY:
        raise ConfigError(
            "the endpoint secrets key is the local default; set "
            "SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY (the API's value) in production"
        )
    if production and config.allow_private_targets:
        raise ConfigError(
            "SIDESTREAM_DELIVERY_ALLOW_PRIVATE_TARGETS turns the webhook SSRF guard off; "
            "it is for local development only: unset it in production"
        )
    guard = config.target_guard(production=production, resolver=resolver)
    schema = schema or settings.postgres_schema
    me = worker_id or delivery_worker_id()
    if install_signal_handlers:
        stop_on_signals(stop, log=logger)
    metrics = DeliveryMetrics(registry)
    producer = kafka_producer(
        settings,
        **{
            "client.id": f"{me}-dlq",
            # A dead letter that cannot be delivered fails within the sweep's wait, and
            # its row stays marked for the next sweep.
            "message.timeout.ms": int(config.dead_letter_timeout_s * 1000),
        },
    )
    dsn = settings.postgres_dsn.get_secret_value()
    search_path = f"-c search_path={schema},public"

    async def listen() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=int(config.db_timeout_s)
        )

    async def main() -> ExitStatus:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=config.db_pool_size,
            open=False,
            name=f"{me}-delivery",
            timeout=config.db_timeout_s,
            kwargs={"autocommit": True, "options": search_path},
        )
        # wait=False: the worker starts while the database is down and retries.
        await pool.open(wait=False)
        http = new_http_client(
            guard=guard,
            timeout_s=config.webhook_timeout_s,
            connect_timeout_s=config.webhook_connect_timeout_s,
            max_connections=config.max_in_flight,
        )
        try:
            worker = DeliveryWorker(
                config=config,
                store=NotificationStore(
                    pool=pool, worker_id=me, lease_s=config.lease_s, schema=schema
                ),
                channels=build_channels(
                    config, http=http, templates=templates or default_templates(), guard=guard
                ),
                metrics=metrics,
                dead_letters=NotificationDeadLetters(
                    producer,
                    worker=me,
                    topic=dead_letter_topic,
                    timeout_s=config.dead_letter_timeout_s,
                ),
                listen=listen,
            )
            with ObservabilityServer.for_worker_if(
                serve_metrics,
                settings,
                registry=registry,
                # Not ready while Postgres or Kafka (dead letters) is away.
                ready=lambda: worker.ready() and kafka_reachable(settings),
            ):
                return await worker.run(stop)
        finally:
            await http.aclose()
            await pool.close()

    logger.info("delivery worker %s: schema %s", me, schema)
    try:
        return asyncio.run(main())
    finally:
        producer.flush(config.dead_letter_timeout_s)
