"""A sink worker process: one sink, one consumer group, metrics and probes, clean exit.

Several processes with the same sink form one consumer group and split its partitions.
SIGTERM or SIGINT → stop polling, finish the batch in hand, commit, leave the group;
the exit code says whether that happened within the deadline.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry

from consumers.dead_letters import DeadLetters, dead_letter_max_bytes, dead_letter_topic
from consumers.metrics import ConsumerMetrics
from consumers.runtime import BatchConfig, BatchRuntime, ExitStatus
from consumers.sink import Sink, TableSink
from consumers.sinks import AnalyticsSink, AuditSink, NotificationsSink
from runtime import ObservabilityServer, Settings
from runtime.clients import (
    kafka_admin,
    kafka_consumer,
    kafka_producer,
    kafka_reachable,
    postgres_pool,
)
from runtime.lifecycle import (
    freeze_startup_objects,
    hand_the_gil_over_promptly,
    stop_on_signals,
)
from schemas import EventDeserializer
from schemas.topics import topic_for

logger = logging.getLogger(__name__)

SINKS: dict[str, Callable[[], TableSink]] = {
    "audit": AuditSink,
    "analytics": AnalyticsSink,
    "notifications": NotificationsSink,
}


def group_id_for(sink_name: str) -> str:
    """The consumer group of a sink's workers."""
    return f"sidestream.sink.{sink_name}"


def worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """What may differ between workers of one deployment (tests use fresh names)."""

    sink: str
    group_id: str | None = None
    topics: tuple[str, ...] | None = None
    schema: str | None = None


def build_sink(name: str) -> Sink:
    try:
        return SINKS[name]()
    except KeyError:
        raise ValueError(f"unknown sink {name!r}; choose one of {', '.join(SINKS)}") from None


def run_worker(
    settings: Settings,
    options: WorkerOptions,
    *,
    stop: threading.Event | None = None,
    registry: CollectorRegistry = REGISTRY,
    install_signal_handlers: bool = True,
    sink: Sink | None = None,
    config: BatchConfig | None = None,
    on_runtime: Callable[[BatchRuntime], None] | None = None,
    ready: Callable[[], bool] | None = None,
) -> ExitStatus:
    """Run one sink worker until ``stop`` is set or a SIGTERM/SIGINT arrives.

    ``sink`` defaults to the built-in sink named ``options.sink``; other packages pass
    their own (e.g. the cache invalidation sink) to run it in the same batch runtime.
    ``config`` (how batches are cut, retried and drained) defaults to
    :meth:`BatchConfig.from_settings`. ``on_runtime`` is shown the runtime before it
    runs (embedded workers ask it for readiness). ``ready`` is one more condition of
    ``/readyz``: a server the sink needs besides Kafka and Postgres (the invalidation
    sink's Redis).
    """
    sink = sink or build_sink(options.sink)
    topics = list(options.topics or (topic_for(sink.event_type),))
    group_id = options.group_id or group_id_for(sink.name)
    stop = stop or threading.Event()
    me = worker_id()
    if install_signal_handlers:
        stop_on_signals(stop, log=logger)

    consumer = kafka_consumer(
        settings,
        group_id,
        **{
            "client.id": me,
            "max.poll.interval.ms": settings.consumer_max_poll_interval_ms,
            # A position outside the log is the runtime's to handle (its offset policy),
            # never a silent jump to the other end.
            "auto.offset.reset": "error",
            "fetch.min.bytes": 1,
            # Bounded prefetch: a few batches (5,000 records ~ 1-2 MB) are enough to keep the
            # loop busy. librdkafka's defaults (64 MB queued, 100,000 messages per partition,
            # 50 MB per fetch) let a backlog fill the process with buffers that glibc then
            # keeps: measured, RSS rose ~10% after the first 100k events and stayed there.
            "queued.max.messages.kbytes": 16384,
            "queued.min.messages": 20000,
            "fetch.max.bytes": 8 * 1024 * 1024,
        },
    )
    # Imported here: consumers.ops builds on this module (replay runs sink workers).
    from consumers.ops.reader import TopicReader

    # Dead letters as large as their topics accept (larger ones go as references).
    dlq_max_bytes = dead_letter_max_bytes(
        kafka_admin(settings), [dead_letter_topic(t) for t in topics], stop=stop
    )
    producer = kafka_producer(
        settings, **{"client.id": f"{me}-dlq", "message.max.bytes": dlq_max_bytes}
    )
    pool = postgres_pool(settings, name=f"{sink.name}-sink", schema=options.schema, max_size=2)
    log_bounds = TopicReader.from_settings(settings)
    runtime = BatchRuntime(
        sink=sink,
        topics=topics,
        group_id=group_id,
        consumer=consumer,
        pool=pool,
        dead_letters=DeadLetters(producer, worker=me, max_message_bytes=dlq_max_bytes),
        deserializer=EventDeserializer(schema_registry_url=settings.schema_registry_url),
        log_bounds=log_bounds,
        metrics=ConsumerMetrics(registry),
        worker_id=me,
        config=config or BatchConfig.from_settings(settings),
    )
    if on_runtime is not None:
        on_runtime(runtime)
    logger.info("worker %s: sink %s, group %s, topics %s", me, sink.name, group_id, topics)
    try:
        with ObservabilityServer.for_worker(
            settings,
            registry=registry,
            # Not ready while the brokers are reported unreachable, too (the runtime
            # itself only knows about the database).
            ready=lambda: (
                runtime.ready() and kafka_reachable(settings) and (ready is None or ready())
            ),
        ):
            if install_signal_handlers:  # the process is ours (not a thread in a test)
                freeze_startup_objects()
                if runtime.pipelined:
                    hand_the_gil_over_promptly()
            status = runtime.run(stop)
    finally:
        producer.flush(5)
        log_bounds.close()
        pool.close()
    logger.info("worker %s stopped: %s", me, status.name.lower())
    return status
