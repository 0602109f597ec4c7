"""Run the live analytics worker: ``sidestream worker run live-analytics``.

`run_live_analytics` checks the topic layout, builds the faust app inside a fresh event
loop on the calling thread, serves ``/metrics``, ``/healthz`` and ``/readyz`` (the
project's `ObservabilityServer`, on the configured metrics port) next to faust's web
server (the JSON views), and runs until `stop` is set or SIGTERM/SIGINT arrives. Then
faust finishes the event in hand, flushes the changelog, commits and leaves the group;
the exit status says whether that happened within ``CONSUMER_SHUTDOWN_DEADLINE_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY, CollectorRegistry

from consumers.live_analytics.app import LiveAnalyticsApp, build_live_app
from consumers.live_analytics.errors import TopicLayoutError
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from consumers.live_analytics.options import LiveAnalyticsOptions
from consumers.live_analytics.snapshot import SnapshotWriter
from runtime import ObservabilityServer, Settings
from runtime.clients import kafka_admin, postgres_pool
from runtime.lifecycle import ExitStatus, freeze_startup_objects, stop_on_signals
from runtime.outages import UNREACHABLE_CODES
from runtime.retry import Backoff
from schemas import AnalyticsAlert, AnalyticsEvent, AuditEvent
from schemas.topics import topic_for

__all__ = ["resolve_topics", "run_live_analytics"]

logger = logging.getLogger(__name__)

_POLL_S = 0.1
# One metadata request while waiting for the brokers: librdkafka cannot interrupt it,
# so it is also how long a SIGTERM may wait (the attempts repeat, with backoff).
_TOPICS_TIMEOUT_S = 2.0
_TOPICS_RETRY_CAP_S = 10.0


def resolve_topics(options: LiveAnalyticsOptions) -> tuple[tuple[str, ...], str]:
    """The source topics and the alerts topic, defaults from ``topics.yaml``."""
    sources = options.topics or (topic_for(AnalyticsEvent), topic_for(AuditEvent))
    return tuple(sources), options.alerts_topic or topic_for(AnalyticsAlert)


def check_topics(
    settings: Settings,
    sources: tuple[str, ...],
    alerts: str,
    *,
    admin: AdminClient | None = None,
    timeout_s: float = 15.0,
) -> int:
    """The sources' common partition count; raises `TopicLayoutError` otherwise.

    Windows are kept per source partition, so the analytics and audit events of one tenant
    must land on the same partition number: same key, same partitioner, same count.

    Raises:
        TopicLayoutError: a topic is missing, or the sources' partition counts differ.
        KafkaException: no broker answered within ``timeout_s``.
    """
    metadata = (admin or kafka_admin(settings)).list_topics(timeout=timeout_s)
    counts: dict[str, int | None] = {}
    for name in (*sources, alerts):
        topic = metadata.topics.get(name)
        counts[name] = None if topic is None or topic.error is not None else len(topic.partitions)
    missing = [name for name, count in counts.items() if count is None]
    if missing:
        raise TopicLayoutError(
            f"missing topic(s) {', '.join(missing)}: create them (sidestream topics apply)",
            topics=counts,
        )
    source_counts = {counts[name] for name in sources}
    if len(source_counts) != 1:
        raise TopicLayoutError(
            "the source topics differ in partition count ("
            + ", ".join(f"{name}: {counts[name]}" for name in sources)
            + "): a tenant's events must meet on one partition number",
            topics=counts,
        )
    (partitions,) = source_counts
    assert partitions is not None
    return partitions


def _await_topics(
    settings: Settings, sources: tuple[str, ...], alerts: str, stop: threading.Event
) -> int | None:
    """:func:`check_topics` once the brokers answer: while they are away, retry with
    backoff (the outage is reported by the process's Kafka log reporter, one line a
    minute) until ``stop`` is set (None)."""
    admin = kafka_admin(settings)
    backoff = Backoff(base_s=1.0, cap_s=_TOPICS_RETRY_CAP_S)
    attempt = 0
    while not stop.is_set():
        try:
            return check_topics(settings, sources, alerts, admin=admin, timeout_s=_TOPICS_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in UNREACHABLE_CODES:
                raise
            # librdkafka hands its log lines to the reporter only from poll().
            admin.poll(0)
            if attempt == 0:
                logger.info("live analytics: waiting for Kafka to check the topics (not ready)")
            stop.wait(backoff.delay(attempt))
            attempt += 1
    return None


class _Worker(faust.Worker):
    """faust's worker, minus what belongs to the process: signals and logging setup."""

    def install_signal_handlers(self) -> None:
        return  # run_live_analytics owns the signals (and may run off the main thread)


def run_live_analytics(
    settings: Settings,
    options: LiveAnalyticsOptions | None = None,
    *,
    stop: threading.Event | None = None,
    registry: CollectorRegistry = REGISTRY,
    install_signal_handlers: bool = True,
    on_ready: Callable[[LiveAnalyticsApp], None] | None = None,
) -> ExitStatus:
    """Run the worker until `stop` is set (or SIGTERM/SIGINT, with signal handlers).

    `on_ready` is called (in the worker's loop) with the app once it is built: tests and
    benchmarks use it to reach the tables. While Kafka is away at start it waits (not
    ready) for the brokers; raises `TopicLayoutError` before starting when the topics
    cannot carry live windows.
    """
    options = options or LiveAnalyticsOptions()
    stop = stop or threading.Event()
    sources, alerts_topic = resolve_topics(options)
    if install_signal_handlers:
        stop_on_signals(stop, log=logger)
    holder: dict[str, LiveAnalyticsApp] = {}

    def ready() -> bool:
        # Not ready until the topics were checked (Kafka answered) and the app runs.
        live = holder.get("live")
        return live is not None and live.ready

    with ObservabilityServer.for_worker(settings, registry=registry, ready=ready):
        partitions = _await_topics(settings, sources, alerts_topic, stop)
        if partitions is None:
            logger.info("live analytics %s stopped before Kafka answered", options.app_id)
            return ExitStatus.DRAINED  # nothing was held
        logger.info(
            "live analytics %s: sources %s (%d partitions), alerts to %s, web on %s:%d",
            options.app_id,
            list(sources),
            partitions,
            alerts_topic,
            options.web_host,
            options.web_port,
        )
        metrics = LiveAnalyticsMetrics(registry)
        pool = postgres_pool(settings, name="live-analytics", schema=options.schema, max_size=2)
        writer = SnapshotWriter(
            pool=pool, metrics=metrics, retry_deadline_s=settings.consumer_retry_deadline_s
        )

        async def serve() -> ExitStatus:
            live = build_live_app(
                settings,
                options,
                topics=sources,
                alerts_topic=alerts_topic,
                partitions=partitions,
                writer=writer,
                metrics=metrics,
                registry=registry,
                stop=stop,
            )
            holder["live"] = live
            if on_ready is not None:
                on_ready(live)
            if install_signal_handlers:  # the process is ours (not a thread in a test)
                freeze_startup_objects()
            status = await _run_until_stopped(live, stop, settings.consumer_shutdown_deadline_s)
            logger.info(
                "live analytics %s counted %d events", options.app_id, live.processor.counted
            )
            return status

        try:
            status = asyncio.run(serve())
        finally:
            pool.close()
    logger.info("live analytics %s stopped: %s", options.app_id, status.name.lower())
    return status


async def _run_until_stopped(
    live: LiveAnalyticsApp, stop: threading.Event, deadline_s: float
) -> ExitStatus:
    worker = _Worker(
        live.app,
        loop=asyncio.get_running_loop(),
        override_logging=False,
        redirect_stdouts=False,
        quiet=True,
        daemon=False,
    )
    starting = asyncio.ensure_future(worker.start())
    crashed: BaseException | None = None
    while not stop.is_set():
        if starting.done() and starting.exception() is not None:
            crashed = starting.exception()
            break
        reason: Any = live.app.crash_reason or worker.crash_reason
        if reason is not None:
            crashed = reason
            break
        await asyncio.sleep(_POLL_S)
    if crashed is not None:
        logger.error("live analytics %s crashed: %r", live.options.app_id, crashed)
    status = ExitStatus.DRAINED
    try:
        # The micro-batch in hand is counted and acknowledged first; faust's stop then
        # commits, without waiting for records it does not know are in hand.
        await asyncio.wait_for(_stop(live, worker), timeout=deadline_s)
    except TimeoutError:
        logger.error("live analytics did not stop within %.0f s", deadline_s)
        status = ExitStatus.ABANDONED
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starting
    return ExitStatus.ABANDONED if crashed is not None else status


async def _stop(live: LiveAnalyticsApp, worker: Any) -> None:
    await live.batches.close()
    await worker.stop()
