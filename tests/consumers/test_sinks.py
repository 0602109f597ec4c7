"""Sinks end to end: real broker → batch runtime → real Postgres."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from consumers import WorkerOptions
from runtime import Settings
from schemas import Event
from tests.consumers.support import count_rows, produce
from tests.support.events import analytics_event, audit_event, notification_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker


def test_three_sinks_land_every_event_exactly_once(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    per_sink = {"audit": 40_000, "analytics": 40_000, "notifications": 20_000}  # 100,000
    builders: dict[str, Callable[[int], Event]] = {
        "audit": audit_event,
        "analytics": analytics_event,
        "notifications": notification_event,
    }
    tables = {
        "audit": "audit_events",
        "analytics": "analytics_events",
        "notifications": "notifications",
    }
    workers = {}
    for sink, count in per_sink.items():
        topic = make_topic(sink)
        produce(stack_settings, topic, (builders[sink](i) for i in range(count)))
        options = WorkerOptions(sink, group_id=unique(sink), topics=(topic,), schema=sink_schema)
        workers[sink] = worker_threads(stack_settings, options)

    def all_landed() -> bool:
        return all(count_rows(pg_conn, sink_schema, tables[s]) >= n for s, n in per_sink.items())

    assert wait_for(all_landed, timeout=120, interval=0.5)
    statuses = {sink: worker.shutdown() for sink, worker in workers.items()}
    assert all(status == 0 for status in statuses.values()), statuses
    for sink, count in per_sink.items():
        assert count_rows(pg_conn, sink_schema, tables[sink]) == count, sink
    distinct = pg_conn.execute(
        f'SELECT count(DISTINCT event_id) FROM "{sink_schema}".audit_events'
    ).fetchone()
    assert distinct == (per_sink["audit"],)
    # Webhook requests name their endpoint; circuits and caps then go per endpoint.
    webhooks = pg_conn.execute(
        f"SELECT count(*), count(*) FILTER (WHERE destination = 'endpoint:' || endpoint_id)"
        f' FROM "{sink_schema}".notifications WHERE channel = %s',
        ("WEBHOOK",),
    ).fetchone()
    expected = len(range(0, per_sink["notifications"], 3))
    assert webhooks == (expected, expected)
    hourly = pg_conn.execute(f'SELECT sum(events) FROM "{sink_schema}".analytics_hourly').fetchone()
    assert hourly == (per_sink["analytics"],)
    pending = pg_conn.execute(
        f"SELECT count(*) FROM \"{sink_schema}\".notifications WHERE status = 'pending'"
    ).fetchone()
    assert pending == (per_sink["notifications"],)
    assert workers["audit"].metric("sidestream_sink_rows_written_total", sink="audit") == 40_000


def test_replaying_a_topic_adds_no_rows_and_no_counts(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    produce(stack_settings, topic, (analytics_event(i) for i in range(3000)))
    first = worker_threads(
        stack_settings,
        WorkerOptions("analytics", group_id=unique("g1"), topics=(topic,), schema=sink_schema),
    )
    assert wait_for(
        lambda: count_rows(pg_conn, sink_schema, "analytics_events") == 3000, timeout=60
    )
    assert first.shutdown() == 0
    rollup = f'SELECT tenant_id, name, hour, events FROM "{sink_schema}".analytics_hourly'
    before = pg_conn.execute(rollup + " ORDER BY 1, 2, 3").fetchall()

    # A second group reads the whole topic again into the same tables (a replay).
    second = worker_threads(
        stack_settings,
        WorkerOptions("analytics", group_id=unique("g2"), topics=(topic,), schema=sink_schema),
    )
    assert wait_for(
        lambda: second.metric("sidestream_sink_duplicates_skipped_total", sink="analytics") == 3000,
        timeout=60,
    )
    assert second.shutdown() == 0
    after = pg_conn.execute(rollup + " ORDER BY 1, 2, 3").fetchall()
    assert count_rows(pg_conn, sink_schema, "analytics_events") == 3000
    assert after == before
    assert sum(row[3] for row in after) == 3000


def test_a_restarted_worker_continues_from_the_offsets_in_postgres(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    group = unique("g")
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    produce(stack_settings, topic, (audit_event(i) for i in range(1000)))
    worker = worker_threads(stack_settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 1000, timeout=60)
    assert worker.shutdown() == 0
    produce(stack_settings, topic, (audit_event(i) for i in range(1000, 1500)))
    again = worker_threads(stack_settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 1500, timeout=60)
    assert again.shutdown() == 0
    # Nothing was read twice: the second run started where Postgres said.
    assert again.metric("sidestream_sink_duplicates_skipped_total", sink="audit") == 0
    stored = pg_conn.execute(
        f'SELECT sum(next_offset) FROM "{sink_schema}".consumer_offsets WHERE group_id = %s',
        (group,),
    ).fetchone()
    assert stored == (1500,)
