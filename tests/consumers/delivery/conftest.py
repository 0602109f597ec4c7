"""Fixtures for delivery tests: a migrated schema, receivers, and workers in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers import CONSUMER_MIGRATIONS
from consumers.delivery import DeliveryConfig, Resolver, run_notify_worker
from runtime import Settings, lifecycle
from runtime.clients import postgres_connect
from runtime.lifecycle import ExitStatus
from runtime.migrations import migrate
from tests.consumers.delivery.support import Responder, SmtpSink, WebhookReceiver
from tests.support.workers import StartedWorkers

#: Small timeouts and backoff so retries happen within a test's patience.
FAST = DeliveryConfig(
    webhook_timeout_s=1.0,
    webhook_connect_timeout_s=0.5,
    smtp_timeout_s=2.0,
    backoff_base_s=0.05,
    backoff_cap_s=0.5,
    max_attempts=5,
    lease_s=10.0,
    lease_margin_s=0.5,
    poll_interval_s=0.5,
    dead_letter_interval_s=0.5,
    metrics_interval_s=0.5,
    shutdown_deadline_s=5.0,
    circuit_cooldown_s=60.0,
    # Receivers listen on 127.0.0.1: the development setting lets webhooks reach them.
    allow_private_targets=True,
)
SECRET = FAST.webhook_signing_secret


@pytest.fixture
def delivery_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    """A fresh schema with the consumers' tables (notifications and attempts)."""
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    return pg_schema


@pytest.fixture
def db(stack_settings: Settings, delivery_schema: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose search path is the test's schema."""
    with postgres_connect(stack_settings, schema=delivery_schema, autocommit=True) as conn:
        yield conn


@pytest.fixture
def dlq_topic(make_topic: Callable[..., str]) -> str:
    return make_topic("ndlq", partitions=1)


@pytest.fixture
def receiver() -> Iterator[Callable[..., WebhookReceiver]]:
    """Start HTTP receivers (``receiver(responder)``); stopped after the test."""
    started: list[WebhookReceiver] = []

    def start(responder: Responder | None = None) -> WebhookReceiver:
        server = WebhookReceiver(responder).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def smtp() -> Iterator[Callable[..., SmtpSink]]:
    started: list[SmtpSink] = []

    def start(rcpt_reply: Callable[[str, int], str | None] | None = None) -> SmtpSink:
        sink = SmtpSink(rcpt_reply).start()
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


class WorkerThread(lifecycle.WorkerThread):
    """``run_notify_worker`` on a thread, with its own metrics registry."""

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str,
        config: DeliveryConfig,
        dead_letter_topic: str,
        worker_id: str,
        resolver: Resolver | None = None,
    ) -> None:
        self.worker_id = worker_id
        self._args = (settings, schema, config, dead_letter_topic)
        self._resolver = resolver
        super().__init__(self._run_notify, name=worker_id)

    def _run_notify(self, stop: threading.Event, registry: CollectorRegistry) -> ExitStatus:
        settings, schema, config, topic = self._args
        return run_notify_worker(
            settings,
            stop=stop,
            registry=registry,
            schema=schema,
            config=config,
            dead_letter_topic=topic,
            worker_id=self.worker_id,
            serve_metrics=False,
            resolver=self._resolver,
        )

    def shutdown(self, timeout: float = 60) -> ExitStatus | None:
        status = super().shutdown(timeout)
        assert not self.running, f"worker {self.worker_id} did not stop"
        return status


StartWorker = Callable[..., WorkerThread]


@pytest.fixture
def start_worker(
    stack_settings: Settings, delivery_schema: str, dlq_topic: str, unique: Callable[[str], str]
) -> Iterator[StartWorker]:
    """``start_worker(config=FAST, resolver=None, **changes)``: a delivery worker on a
    thread, stopped after the test (its failure, if any, fails the test)."""
    started: StartedWorkers[WorkerThread] = StartedWorkers()

    def start(
        config: DeliveryConfig = FAST, resolver: Resolver | None = None, **changes: Any
    ) -> WorkerThread:
        worker = WorkerThread(
            stack_settings,
            schema=delivery_schema,
            config=config.replace(**changes) if changes else config,
            dead_letter_topic=dlq_topic,
            worker_id=unique("w") + f"-{len(started)}",
            resolver=resolver,
        )
        return started.add(worker.start())

    yield start
    started.stop_all()
