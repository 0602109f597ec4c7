"""Replay: resets move Postgres and Kafka offsets together, runs re-read exactly the range,
and nothing is ever written twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers import WorkerOptions
from consumers.ops import (
    Activity,
    FromBeginning,
    FromTime,
    GroupActiveError,
    ReplayProgress,
    ReplayRunner,
    ToOffset,
    plan_replay,
    prepare_shadow_schema,
    reset_offsets,
    resume_points,
    shadow_group_id,
)
from consumers.ops.positions import stored_offsets
from runtime import Settings
from tests.consumers.ops.support import (
    Produced,
    offsets_rows,
    ops_clients,
    per_partition,
    produce_stamped,
)
from tests.consumers.support import count_rows
from tests.support.events import audit_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker

#: Every column of audit_events but ingested_at (when the row was written).
AUDIT_COLUMNS = (
    "event_id, occurred_at, tenant_id, producer, actor_id, action, resource_type,"
    " resource_id, outcome, ip, details, schema_version, kafka_partition, kafka_offset"
)


@pytest.fixture
def shadow_schema(pg_conn: psycopg.Connection[Any], unique: Callable[[str], str]) -> Iterator[str]:
    """A name for a shadow schema (created by the code under test), dropped after."""
    name = unique("shadow")
    yield name
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _old_and_new(
    settings: Settings, topic: str, old: int, new: int
) -> tuple[list[Produced], datetime]:
    """``old`` audit events stamped two hours ago, then ``new`` stamped ten minutes ago;
    returns where they landed and a time between the two."""
    now = int(time.time() * 1000)
    stamps = [now - 7_200_000 + i for i in range(old)] + [now - 600_000 + i for i in range(new)]
    events = [audit_event(i) for i in range(old + new)]
    landed = produce_stamped(settings, topic, events, stamps_ms=stamps, flush_every=97)
    return landed, datetime.now(UTC) - timedelta(hours=1)


def _land_everything(
    start: StartWorker,
    settings: Settings,
    options: WorkerOptions,
    conn: psycopg.Connection[Any],
    rows: int,
) -> None:
    worker = start(settings, options)
    assert options.schema is not None
    assert wait_for(
        lambda: count_rows(conn, options.schema or "", "audit_events") == rows, timeout=60
    )
    assert worker.shutdown() == 0


def test_replay_from_a_time_rereads_exactly_the_later_records_and_adds_nothing(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    landed, between = _old_and_new(stack_settings, topic, old=300, new=200)
    group = unique("g")
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    _land_everything(worker_threads, stack_settings, options, pg_conn, 500)
    generations_before = {
        (t, p): g for t, p, _o, g, _owner, _at in offsets_rows(pg_conn, sink_schema, group)
    }

    old_per_partition = per_partition(landed[:300])
    with ops_clients(stack_settings) as (reader, groups):
        plan = plan_replay(
            conn=pg_conn,
            schema=sink_schema,
            reader=reader,
            groups=groups,
            group=group,
            topic=topic,
            start=FromTime(between),
        )
        assert plan.activity.activity is Activity.IDLE
        # The first offset after the time is the number of older records per partition.
        assert plan.new_offsets == {(topic, p): old_per_partition[p] for p in range(3)}
        assert plan.reprocess == 200
        assert all(p.postgres_offset == p.ends.end for p in plan.partitions)

        result = reset_offsets(plan, conn=pg_conn, groups=groups)
        assert result.kafka_committed
        # Both stores hold the new positions; each partition's generation moved on.
        assert stored_offsets(pg_conn, sink_schema, group) == plan.new_offsets
        assert groups.committed(group) == plan.new_offsets
        for t, p, _o, generation, owner, _at in offsets_rows(pg_conn, sink_schema, group):
            assert generation == generations_before[(t, p)] + 1
            assert owner == "sidestream-replay"

        runner = ReplayRunner(
            settings=stack_settings,
            options=options,
            starts=plan.new_offsets,
            ends=plan.ends,
            reader=reader,
        )
        seen: list[ReplayProgress] = []
        outcome = runner.run(on_progress=seen.append)

    assert outcome.completed
    assert outcome.worker_status == 0
    assert (outcome.done, outcome.total) == (200, 200)
    assert seen[-1].done == 200
    assert [p.done for p in seen] == sorted(p.done for p in seen)  # never goes back
    # Exactly the 200 later records were read again, and every one was a duplicate.
    assert runner.worker.metric("sidestream_sink_duplicates_skipped_total", sink="audit") == 200
    assert runner.worker.metric("sidestream_sink_rows_written_total", sink="audit") == 0
    total, distinct = pg_conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{sink_schema}".audit_events'
    ).fetchone() or (0, 0)
    assert (total, distinct) == (500, 500)
    assert stored_offsets(pg_conn, sink_schema, group) == plan.ends


def test_a_reset_is_refused_while_the_group_has_members_unless_forced(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    _old_and_new(stack_settings, topic, old=50, new=50)
    group = unique("g")
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    worker = worker_threads(stack_settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 100, timeout=60)

    with ops_clients(stack_settings) as (reader, groups):
        plan = plan_replay(
            conn=pg_conn,
            schema=sink_schema,
            reader=reader,
            groups=groups,
            group=group,
            topic=topic,
            start=FromBeginning(),
        )
        assert plan.activity.activity is Activity.ACTIVE
        before = offsets_rows(pg_conn, sink_schema, group)
        committed_before = groups.committed(group)
        with pytest.raises(GroupActiveError) as refused:
            reset_offsets(plan, conn=pg_conn, groups=groups)
        assert refused.value.group == group
        assert "--force" in str(refused.value)
        assert offsets_rows(pg_conn, sink_schema, group) == before
        assert groups.committed(group) == committed_before

        # Forced: Postgres moves and fences the worker; Kafka refuses a member-less commit.
        forced = reset_offsets(plan, conn=pg_conn, groups=groups, force=True)
    assert stored_offsets(pg_conn, sink_schema, group) == dict.fromkeys(plan.new_offsets, 0)
    assert not forced.kafka_committed
    assert forced.kafka_note is not None
    generations = {(t, p): g for t, p, _o, g, _w, _a in offsets_rows(pg_conn, sink_schema, group)}
    assert all(generations[(t, p)] > g for t, p, _o, g, _w, _a in before)
    assert worker.shutdown() == 0


def test_explicit_offsets_are_clamped_into_the_partition(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("offsets", partitions=2)
    produce_stamped(stack_settings, topic, [b"x"] * 30, stamps_ms=[1] * 30, partition=0)
    produce_stamped(stack_settings, topic, [b"x"] * 10, stamps_ms=[1] * 10, partition=1)
    with ops_clients(stack_settings) as (reader, groups):
        plan = plan_replay(
            conn=pg_conn,
            schema=sink_schema,
            reader=reader,
            groups=groups,
            group=unique("g"),
            topic=topic,
            start=ToOffset(default=20),
        )
        only_one = plan_replay(
            conn=pg_conn,
            schema=sink_schema,
            reader=reader,
            groups=groups,
            group=unique("g"),
            topic=topic,
            start=ToOffset(per_partition=((1, 4),)),
        )
    assert plan.new_offsets == {(topic, 0): 20, (topic, 1): 10}
    assert [p.method for p in plan.partitions] == ["offset", "offset (clamped from 20)"]
    assert plan.reprocess == 10
    assert only_one.new_offsets == {(topic, 1): 4}
    assert all(p.postgres_offset is None and p.kafka_offset is None for p in plan.partitions)


def test_a_shadow_replay_copies_the_live_rows_of_the_range(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    shadow_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    _landed, between = _old_and_new(stack_settings, topic, old=250, new=150)
    live = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    _land_everything(worker_threads, stack_settings, live, pg_conn, 400)

    assert "0001_consumer_offsets" in prepare_shadow_schema(pg_conn, shadow_schema)
    group = shadow_group_id("audit", shadow_schema)
    with ops_clients(stack_settings) as (reader, groups):
        plan = plan_replay(
            conn=pg_conn,
            schema=shadow_schema,
            reader=reader,
            groups=groups,
            group=group,
            topic=topic,
            start=FromTime(between),
        )
        assert all(p.postgres_offset is None for p in plan.partitions)  # a fresh group
        reset_offsets(plan, conn=pg_conn, groups=groups)
        runner = ReplayRunner(
            settings=stack_settings,
            options=WorkerOptions("audit", group_id=group, topics=(topic,), schema=shadow_schema),
            starts=plan.new_offsets,
            ends=plan.ends,
            reader=reader,
            rate=400,
        )
        outcome = runner.run()
    assert outcome.completed
    assert outcome.done == 150

    starts = plan.new_offsets
    in_range = " OR ".join(
        f"(kafka_partition = {p} AND kafka_offset >= {o})" for (_t, p), o in starts.items()
    )
    live_rows = pg_conn.execute(
        f'SELECT {AUDIT_COLUMNS} FROM "{sink_schema}".audit_events WHERE {in_range} ORDER BY 1'
    ).fetchall()
    shadow_rows = pg_conn.execute(
        f'SELECT {AUDIT_COLUMNS} FROM "{shadow_schema}".audit_events ORDER BY 1'
    ).fetchall()
    assert len(live_rows) == 150
    assert shadow_rows == live_rows
    assert count_rows(pg_conn, sink_schema, "audit_events") == 400  # live untouched
    # The rate limit cut the run into batches of at most 400/s x 0.25 s = 100 records.
    batches = runner.worker.metric("sidestream_batch_size_count", sink="audit")
    assert batches >= 2
    small = runner.worker.metric("sidestream_batch_size_bucket", sink="audit", le="100.0")
    assert small == batches


def test_an_interrupted_run_continues_where_it_stopped(
    stack_settings: Settings,
    topic: str,
    shadow_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    count = 3000
    now = int(time.time() * 1000)
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(count)],
        stamps_ms=[now - count + i for i in range(count)],
    )
    prepare_shadow_schema(pg_conn, shadow_schema)
    group = shadow_group_id("audit", shadow_schema)
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=shadow_schema)
    with ops_clients(stack_settings) as (reader, groups):
        plan = plan_replay(
            conn=pg_conn,
            schema=shadow_schema,
            reader=reader,
            groups=groups,
            group=group,
            topic=topic,
            start=FromBeginning(),
        )
        reset_offsets(plan, conn=pg_conn, groups=groups)

        # Interrupt (as Ctrl-C does) once some records are in, well before the end.
        stop = threading.Event()

        def interrupt_midway(progress: ReplayProgress) -> None:
            if progress.done >= 300:
                stop.set()

        first = ReplayRunner(
            settings=stack_settings,
            options=options,
            starts=plan.new_offsets,
            ends=plan.ends,
            reader=reader,
            rate=1000,
        ).run(stop=stop, on_progress=interrupt_midway)
        assert not first.completed
        assert 0 < first.done < count

        starts, ends = resume_points(
            conn=pg_conn, schema=shadow_schema, reader=reader, group=group, topic=topic
        )
        assert sum(starts.values()) == first.done  # it continues, not restarts
        second_runner = ReplayRunner(
            settings=stack_settings,
            options=options,
            starts=starts,
            ends={key: e.end for key, e in ends.items()},
            reader=reader,
        )
        second = second_runner.run()
    assert second.completed
    assert first.done + second.done == count
    assert (
        second_runner.worker.metric("sidestream_sink_duplicates_skipped_total", sink="audit") == 0
    )
    total, distinct = pg_conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{shadow_schema}".audit_events'
    ).fetchone() or (0, 0)
    assert (total, distinct) == (count, count)
