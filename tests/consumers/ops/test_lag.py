"""Lag: positions from both stores, true end offsets, and the age of the oldest pending record."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from consumers import WorkerOptions
from consumers.ops import Activity, measure_lag
from consumers.ops.positions import move_offsets
from runtime import Settings
from runtime.clients import kafka_consumer
from sidestream.lag_cmd import render
from tests.consumers.ops.support import ops_clients, per_partition, produce_stamped
from tests.consumers.support import count_rows
from tests.support.events import audit_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker


def test_lag_matches_what_the_broker_and_postgres_say(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    admin: AdminClient,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=2)
    now = int(time.time() * 1000)
    first = produce_stamped(
        stack_settings, topic, [audit_event(i) for i in range(300)], stamps_ms=[now] * 300
    )
    group = unique("g")
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    worker = worker_threads(stack_settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 300, timeout=60)
    assert worker.shutdown() == 0
    # 120 more, stamped ten minutes ago, in several batches (so a broker that reports
    # the high watermark at the last batch's start reads short).
    later = produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(300, 420)],
        stamps_ms=[now - 600_000] * 120,
        flush_every=25,
    )
    produced = per_partition(first + later)
    pending = per_partition(later)

    with ops_clients(stack_settings) as (reader, groups):
        report = measure_lag(conn=pg_conn, schema=sink_schema, reader=reader, groups=groups)
    # The broker's own answers, read after the report (nothing moved in between).
    broker_committed = {
        tp.partition: tp.offset
        for tp in admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
        .result(10)
        .topic_partitions
    }
    probe = kafka_consumer(stack_settings, unique("probe"))
    try:
        watermarks = {
            p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in (0, 1)
        }
    finally:
        probe.close()
    stored = dict(
        pg_conn.execute(
            f'SELECT partition, next_offset FROM "{sink_schema}".consumer_offsets'
        ).fetchall()
    )

    assert [g.group for g in report.groups] == [group]  # every group of the schema
    (lagging,) = report.groups
    assert lagging.activity.activity is Activity.IDLE
    assert lagging.lag == 120
    for row in lagging.partitions:
        p = row.partition
        assert row.postgres_offset == stored[p] == produced[p] - pending[p]
        assert row.kafka_offset == broker_committed[p]
        assert row.ends.reported == watermarks[p][1]  # the broker's high watermark...
        assert row.ends.end == produced[p]  # ...may read short; the true end does not
        assert row.ends.reported <= row.ends.end
        assert row.lag == pending[p]
        waited = row.event_time_lag_s(report.taken_at)
        if pending[p]:
            assert waited is not None
            assert 600 <= waited < 3600
        else:
            assert waited == 0.0
    assert report.short_watermarks == any(watermarks[p][1] < produced[p] for p in (0, 1))
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["groups"][0]["lag"] == 120
    assert {p["partition"]: p["end_offset"] for p in as_json["groups"][0]["partitions"]} == {
        p: produced[p] for p in (0, 1)
    }


def test_a_running_group_shows_as_active_and_caught_up(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(90)],
        stamps_ms=[int(time.time() * 1000)] * 90,
    )
    group = unique("g")
    worker_threads(
        stack_settings, WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 90, timeout=60)
    with ops_clients(stack_settings) as (reader, groups):
        report = measure_lag(
            conn=pg_conn, schema=sink_schema, reader=reader, groups=groups, group_ids=[group]
        )
    (running,) = report.groups
    assert running.activity.activity is Activity.ACTIVE
    assert running.lag == 0
    assert all(p.event_time_lag_s(report.taken_at) == 0.0 for p in running.partitions)


def test_a_stored_offset_past_the_end_is_shown_not_clamped(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=2)
    group = unique("g")
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(6)],
        stamps_ms=[int(time.time() * 1000)] * 6,
        partition=0,
    )
    move_offsets(pg_conn, sink_schema, group, {(topic, 0): 9, (topic, 1): 0}, owner="test")
    with ops_clients(stack_settings) as (reader, groups):
        report = measure_lag(conn=pg_conn, schema=sink_schema, reader=reader, groups=groups)
    (lagging,) = report.groups
    past, fine = lagging.partitions
    assert past.out_of_range is not None
    assert (past.out_of_range.stored, past.out_of_range.end) == (9, 6)
    assert past.lag == -3  # three past the end, not "caught up"
    assert fine.out_of_range is None
    assert fine.lag == 0
    assert lagging.lag == 0
    assert (
        json.loads(json.dumps(report.to_dict()))["groups"][0]["partitions"][0]["out_of_range"]
        == "past the end"
    )
    console = Console(width=400, record=True)
    console.print(render(report))
    text = console.export_text()
    assert f"{topic}[0] stored offset 9 is past the end of the log (start 0, end 6)" in text
    assert f"sidestream replay --group {group} --topic {topic} --partitions 0" in text
