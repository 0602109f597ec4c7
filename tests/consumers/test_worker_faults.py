"""Workers under faults: kills, drains, rebalances and a database that goes away."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers import CONSUMER_MIGRATIONS, WorkerOptions
from devtools.localstack.postgres import PostgresServer
from runtime import Settings
from runtime.clients import postgres_connect
from runtime.migrations import migrate
from tests.consumers.support import count_rows, produce, worker_process
from tests.support.events import audit_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker


def _assert_exactly_once(conn: psycopg.Connection[Any], schema: str, topic_size: int) -> None:
    total, distinct = conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{schema}".audit_events'
    ).fetchone() or (0, 0)
    assert (total, distinct) == (topic_size, topic_size)
    # No gaps: every offset of every partition is there exactly once.
    gaps = conn.execute(
        f"""SELECT kafka_partition, count(*), min(kafka_offset), max(kafka_offset)
            FROM "{schema}".audit_events GROUP BY 1"""
    ).fetchall()
    for _partition, count, low, high in gaps:
        assert (low, high) == (0, count - 1)


def test_sigterm_drains_and_exits_zero(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    produce(stack_settings, topic, (audit_event(i) for i in range(20_000)))
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    process = worker_process(stack_settings, options, log=tmp_path / "worker.log")
    try:
        assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") > 0, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0, (tmp_path / "worker.log").read_text()[-3000:]
    finally:
        process.kill()
    log = (tmp_path / "worker.log").read_text()
    assert "received SIGTERM" in log
    assert "stopped: drained" in log
    # Whatever was written is committed together with its offsets.
    stored = pg_conn.execute(
        f'SELECT coalesce(sum(next_offset), 0) FROM "{sink_schema}".consumer_offsets'
    ).fetchone()
    assert stored == (count_rows(pg_conn, sink_schema, "audit_events"),)


def test_two_workers_split_partitions_and_take_over_when_one_stops(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=6)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    first = worker_threads(stack_settings, options)
    second = worker_threads(stack_settings, options)
    produce(stack_settings, topic, (audit_event(i) for i in range(6000)))
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 6000, timeout=90)
    written = [
        w.metric("sidestream_sink_rows_written_total", sink="audit") for w in (first, second)
    ]
    assert all(n > 0 for n in written), written  # both took part
    assert first.shutdown() == 0
    produce(stack_settings, topic, (audit_event(i) for i in range(6000, 9000)))
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 9000, timeout=90)
    assert second.shutdown() == 0
    _assert_exactly_once(pg_conn, sink_schema, 9000)


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A Postgres of this test's own, so stopping it disturbs no other test."""
    # port 0: a free port picked when it starts (another if taken meanwhile), kept on restart
    server = PostgresServer(stack_dir=tmp_path / "stack", port=0, database="faults")
    server.start()
    yield server
    server.stop()


def _on_private_postgres(
    stack_settings: Settings, server: PostgresServer, *, retry_deadline_s: float
) -> tuple[Settings, Callable[[], int]]:
    """Settings for workers on ``server`` (migrated), and a row count that says -1 while
    the server is down."""
    settings = stack_settings.with_overrides(
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{server.port}/faults",
        consumer_retry_deadline_s=retry_deadline_s,
    )
    with postgres_connect(settings, autocommit=True) as conn:
        migrate(conn, [CONSUMER_MIGRATIONS], schema="public")

    def rows() -> int:
        try:
            with postgres_connect(settings, connect_timeout=2) as conn:
                return count_rows(conn, "public", "audit_events")
        except psycopg.OperationalError:
            return -1

    return settings, rows


@pytest.mark.chaos
def test_postgres_restart_pauses_the_worker_which_recovers_by_itself(
    stack_settings: Settings,
    topic: str,
    private_postgres: PostgresServer,
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    settings, rows = _on_private_postgres(stack_settings, private_postgres, retry_deadline_s=2)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,))
    worker = worker_threads(settings, options)
    produce(settings, topic, (audit_event(i) for i in range(5000)))
    assert wait_for(lambda: rows() == 5000, timeout=60)
    private_postgres.stop()
    produce(settings, topic, (audit_event(i) for i in range(5000, 10_000)))
    assert wait_for(
        lambda: worker.metric("sidestream_consumer_paused", sink="audit") == 1, timeout=30
    )
    assert wait_for(
        lambda: worker.metric("sidestream_batch_retries_total", sink="audit") >= 3, timeout=30
    )
    private_postgres.start()
    assert wait_for(lambda: rows() == 10_000, timeout=90)
    assert worker.metric("sidestream_consumer_paused", sink="audit") == 0
    assert worker.shutdown() == 0
    with postgres_connect(settings) as conn:
        _assert_exactly_once(conn, "public", 10_000)


@pytest.mark.chaos
def test_sigkilled_workers_lose_and_duplicate_nothing(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> None:
    total, kills = 60_000, 5
    topic = make_topic("audit", partitions=4)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    rng = random.Random(int(os.environ.get("SIDESTREAM_TEST_SEED", "1234")))
    produce(stack_settings, topic, (audit_event(i) for i in range(total)))
    env = {"SIDESTREAM_CONSUMER_BATCH_MAX_RECORDS": "500"}  # many commits to land between
    log = tmp_path / "workers.log"
    for kill in range(kills):
        process = worker_process(stack_settings, options, log=log, extra_env=env)
        try:
            target = (kill + 1) * total // (kills + 2) + rng.randrange(0, 2000)
            wait_for(
                lambda goal=target: count_rows(pg_conn, sink_schema, "audit_events") >= goal,  # type: ignore[misc]
                timeout=90,
            )
            time.sleep(rng.random() * 0.3)  # land somewhere inside a batch
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    survivor = worker_process(stack_settings, options, log=log)
    try:
        assert wait_for(
            lambda: count_rows(pg_conn, sink_schema, "audit_events") >= total, timeout=120
        ), log.read_text()[-3000:]
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=40) == 0
    finally:
        survivor.kill()
    _assert_exactly_once(pg_conn, sink_schema, total)


@pytest.mark.chaos
@pytest.mark.parametrize(
    "outage_s", [2.0, 6.0], ids=["outage-within-deadline", "outage-past-deadline"]
)
def test_a_database_outage_during_a_rebalance_leaves_every_worker_consuming(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    private_postgres: PostgresServer,
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    outage_s: float,
) -> None:
    """A batch is retrying while the database is away and a second worker joins: the
    retried batch's partitions move, both workers claim in the assignment callback while
    the database is still away (past the retry deadline in the second case), and once it
    returns both consume, ready and unpaused — nothing lost, nothing twice, nobody dead."""
    settings, rows = _on_private_postgres(stack_settings, private_postgres, retry_deadline_s=3)
    topic = make_topic("audit", partitions=4)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,))
    first = worker_threads(settings, options)
    produce(settings, topic, (audit_event(i) for i in range(4000)))
    assert wait_for(lambda: rows() == 4000, timeout=60)
    private_postgres.stop()
    stopped = time.monotonic()
    produce(settings, topic, (audit_event(i) for i in range(4000, 8000)))
    assert wait_for(
        lambda: first.metric("sidestream_consumer_paused", sink="audit") == 1, timeout=30
    )
    second = worker_threads(settings, options)  # the rebalance, while the database is away
    assert wait_for(
        lambda: second.metric("sidestream_rebalances_total", sink="audit", kind="assign") >= 1,
        timeout=30,
    )
    time.sleep(max(0.0, stopped + outage_s - time.monotonic()))
    if outage_s > settings.consumer_retry_deadline_s:
        # Both are claiming in the assignment callback, past the retry deadline.
        assert wait_for(lambda: not (first.ready() or second.ready()), timeout=30)
    assert first.alive
    assert second.alive
    private_postgres.start()

    assert wait_for(lambda: rows() == 8000, timeout=120)
    for worker in (first, second):
        assert worker.alive
        assert wait_for(worker.ready, timeout=30)
        assert worker.metric("sidestream_consumer_paused", sink="audit") == 0
    # New records on every partition land too: no partition was left paused.
    produce(settings, topic, (audit_event(i) for i in range(8000, 10_000)))
    assert wait_for(lambda: rows() == 10_000, timeout=60)
    assert first.shutdown() == 0
    assert second.shutdown() == 0
    with postgres_connect(settings) as conn:
        _assert_exactly_once(conn, "public", 10_000)
