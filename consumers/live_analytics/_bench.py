"""Throughput of the live analytics worker, for the bench harness (`measure_live_analytics`).

What is measured: events per second through the whole worker — decode, the counts summed
per micro-batch (each one-minute window and action window written once per batch; the
five-minute windows are sums of one-minute ones), window closing with batched upserts into
Postgres, and the commits — reading a backlog that was produced before the worker started
(catch-up speed, the worst case for a stream processor, and the one that matters after an
outage).

Everything is scratch: fresh topics (analytics, audit, alerts) and app id, a fresh
Postgres schema, all deleted afterwards, faust's changelog topics included.

Run by hand: ``.venv/bin/python -m consumers.live_analytics._bench [n]``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from psycopg import sql

from consumers.live_analytics.app import internal_topics
from consumers.live_analytics.embedded import EmbeddedLiveAnalytics
from consumers.live_analytics.options import LiveAnalyticsOptions
from consumers.migrations_source import CONSUMER_MIGRATIONS
from runtime import Settings
from runtime.clients import kafka_admin, kafka_producer, postgres_connect
from runtime.lifecycle import freeze_startup_objects
from runtime.migrations import migrate
from runtime.ports import free_port
from schemas import AnalyticsEvent, AuditEvent, AuditOutcome, Event, EventSerializer

__all__ = ["measure_live_analytics"]

_PARTITIONS = 3
_TENANTS = 50
_EVENTS_PER_MINUTE = 2000  # of event time: the stream spans n / 2000 minutes


def _events(n: int) -> list[tuple[bool, Event]]:
    """(is_analytics, event) pairs in event-time order, 1 in 5 an audit event."""
    start = datetime(2024, 5, 1, tzinfo=UTC)
    events: list[tuple[bool, Event]] = []
    for i in range(n):
        tenant = f"tenant-{i % _TENANTS}"
        when = start + timedelta(seconds=i * 60 / _EVENTS_PER_MINUTE)
        if i % 5 == 4:
            events.append(
                (
                    False,
                    AuditEvent.new(
                        tenant_id=tenant,
                        producer="bench",
                        actor_id=f"user-{i % 97}",
                        action="invoice.update",
                        resource_type="invoice",
                        resource_id=f"inv-{i}",
                        outcome=AuditOutcome.SUCCESS,
                        occurred_at=when,
                    ),
                )
            )
        else:
            name = ("page_view", "click", "signup", "checkout_completed")[i % 4]
            events.append(
                (
                    True,
                    AnalyticsEvent.new(
                        tenant_id=tenant, producer="bench", name=name, occurred_at=when
                    ),
                )
            )
    return events


def measure_live_analytics(settings: Settings, n: int, *, timeout_s: float = 600) -> dict[str, Any]:
    """Events per second of the live analytics worker over a backlog of `n` events.

    Returns ``events``, ``seconds`` (first event counted to the last, after the worker was
    ready), ``events_per_s``, ``startup_s`` (start to ready: group join and recovery),
    ``windows_closed``, ``snapshot_rows``, ``late`` (events behind the two topics'
    interleaving by more than the grace) and ``batch_max`` (events per micro-batch at most).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    token = uuid.uuid4().hex[:8]
    analytics_topic, audit_topic, alerts_topic = (
        f"bench_live_{kind}_{token}" for kind in ("analytics", "audit", "alerts")
    )
    schema = f"bench_live_{token}"
    options = LiveAnalyticsOptions(
        app_id=f"bench_live_{token}",
        topics=(analytics_topic, audit_topic),
        alerts_topic=alerts_topic,
        schema=schema,
        # faust refuses port 0 (its web_port setting starts at 1): a port picked free.
        web_port=free_port(),
        grace_s=60,
        standby_replicas=0,
        data_dir=Path(tempfile.mkdtemp(prefix=f"bench_live_{token}_")),
    )
    admin = kafka_admin(settings)
    topics = {analytics_topic: _PARTITIONS, audit_topic: _PARTITIONS, alerts_topic: 1}
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=p, replication_factor=1) for name, p in topics.items()]
    )
    for future in futures.values():
        future.result(timeout=15)
    worker: EmbeddedLiveAnalytics | None = None
    try:
        with postgres_connect(settings, autocommit=True) as conn:
            migrate(conn, [CONSUMER_MIGRATIONS], schema=schema)
        serializer = EventSerializer()
        # Uncompressed: aiokafka reads lz4 batches only with `cramjam` installed.
        producer = kafka_producer(settings, **{"compression.type": "none"})
        for i, (is_analytics, event) in enumerate(_events(n)):
            topic = analytics_topic if is_analytics else audit_topic
            producer.produce(topic, value=serializer.serialize(event, topic), key=event.key)
            if i % 5000 == 0:
                producer.poll(0)
        if producer.flush(60) != 0:
            raise RuntimeError("the backlog could not be produced")

        # As a worker process does at start (`runtime.lifecycle.freeze_startup_objects`): the
        # worker runs in this process, whose backlog and modules the cyclic GC need not scan.
        freeze_startup_objects()
        started = time.perf_counter()
        worker = EmbeddedLiveAnalytics(settings, options).start()
        if not worker.wait_ready(120):
            raise RuntimeError("the live analytics worker did not become ready")
        ready = time.perf_counter()

        def done() -> float:
            assert worker is not None
            counted = sum(
                worker.metric("sidestream_live_events_total", topic=t)
                for t in (analytics_topic, audit_topic)
            )
            return counted + worker.metric("sidestream_live_events_skipped_total", reason="late")

        first: float | None = None
        deadline = ready + timeout_s
        while done() < n:
            if first is None and done() > 0:
                first = time.perf_counter()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{done():.0f} of {n} events after {timeout_s} s")
            time.sleep(0.05)
        finished = time.perf_counter()
        seconds = finished - (first or ready)
        return {
            "events": n,
            "seconds": seconds,
            "events_per_s": n / seconds if seconds > 0 else float("inf"),
            "startup_s": ready - started,
            "windows_closed": sum(
                worker.metric("sidestream_live_windows_closed_total", window=w)
                for w in ("1m", "5m")
            ),
            "snapshot_rows": worker.metric("sidestream_live_snapshot_rows_total"),
            "late": worker.metric("sidestream_live_events_skipped_total", reason="late"),
            "batch_max": options.batch_max,
            "partitions": _PARTITIONS,
        }
    finally:
        if worker is not None:
            with contextlib.suppress(Exception):
                worker.shutdown(60)
        names = [*topics, *internal_topics(options.app_id)]
        for future in admin.delete_topics(names, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)
        with postgres_connect(settings, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        if options.data_dir is not None:
            shutil.rmtree(options.data_dir, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual runs
    import json
    import logging

    from runtime import load_settings

    logging.basicConfig(level=logging.WARNING)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    print(json.dumps(measure_live_analytics(load_settings(), count), indent=2))
