"""The operator commands as an operator runs them: real CLI processes, real servers.

The commands are run as ``python -c "from sidestream.<module> import app; app()"`` so
they work before they are registered in ``sidestream.main``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers import WorkerOptions, dead_letter_topic
from consumers.ops.positions import has_table, stored_offsets
from consumers.ops.redrive import redriven_positions
from runtime import Settings
from tests.consumers.ops.support import (
    offsets_rows,
    ops_clients,
    per_partition,
    produce_stamped,
    topic_size,
)
from tests.consumers.support import count_rows
from tests.support.cli import cli_command, run_cli
from tests.support.events import audit_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker


@pytest.fixture
def shadow_schema(pg_conn: psycopg.Connection[Any], unique: Callable[[str], str]) -> Iterator[str]:
    name = unique("shadow")
    yield name
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _landed_topic(
    settings: Settings,
    topic: str,
    schema: str,
    conn: psycopg.Connection[Any],
    start: StartWorker,
    group: str,
    *,
    old: int,
    new: int,
) -> dict[int, int]:
    """``old`` records stamped 2 h ago and ``new`` ones 10 min ago, all landed by ``group``;
    returns the number of old records per partition."""
    now = int(time.time() * 1000)
    stamps = [now - 7_200_000 + i for i in range(old)] + [now - 600_000 + i for i in range(new)]
    landed = produce_stamped(
        settings, topic, [audit_event(i) for i in range(old + new)], stamps_ms=stamps
    )
    worker = start(settings, WorkerOptions("audit", group_id=group, topics=(topic,), schema=schema))
    assert wait_for(lambda: count_rows(conn, schema, "audit_events") == old + new, timeout=60)
    assert worker.shutdown() == 0
    return dict(per_partition(landed[:old]))


def test_replay_dry_run_prints_the_plan_and_changes_nothing(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    shadow_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    group = unique("g")
    _landed_topic(
        stack_settings, topic, sink_schema, pg_conn, worker_threads, group, old=120, new=80
    )
    with ops_clients(stack_settings) as (_reader, groups):
        kafka_before = groups.committed(group)
        rows_before = offsets_rows(pg_conn, sink_schema, group)
        result = run_cli(
            stack_settings,
            "replay_cmd",
            *("--group", group, "--topic", topic, "--schema", sink_schema),
            *("--from-time", "1h", "--dry-run"),
        )
        assert result.returncode == 0, result.stderr
        assert "dry run" in result.stdout
        assert "80 records to re-read" in result.stdout
        # Nothing moved: not a column of the offsets rows, not Kafka's offsets.
        assert offsets_rows(pg_conn, sink_schema, group) == rows_before
        assert groups.committed(group) == kafka_before

        shadow = run_cli(
            stack_settings,
            "replay_cmd",
            *("--sink", "audit", "--topic", topic, "--schema", sink_schema),
            *("--target-schema", shadow_schema, "--from-beginning", "--dry-run"),
        )
        assert shadow.returncode == 0, shadow.stderr
        assert "would be created" in shadow.stdout
        assert "200 records to re-read" in shadow.stdout
        assert not has_table(pg_conn, shadow_schema, "consumer_offsets")
        assert groups.committed(f"sidestream.replay.audit.{shadow_schema}") == {}


def test_replay_resets_and_reruns_the_sink_in_place(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    group = unique("g")
    old = _landed_topic(
        stack_settings, topic, sink_schema, pg_conn, worker_threads, group, old=150, new=90
    )
    result = run_cli(
        stack_settings,
        "replay_cmd",
        *("--sink", "audit", "--group", group, "--topic", topic, "--schema", sink_schema),
        *("--from-time", "1h", "--rate", "500"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reset 3 partition(s)" in result.stdout
    assert "and Kafka" in result.stdout
    assert "replayed 90 records" in result.stdout
    assert stored_offsets(pg_conn, sink_schema, group) == {
        (topic, p): n for p, n in per_partition_total(pg_conn, sink_schema).items()
    }
    assert old  # the plan started after the old records (checked by the count above)
    total, distinct = pg_conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{sink_schema}".audit_events'
    ).fetchone() or (0, 0)
    assert (total, distinct) == (240, 240)


def per_partition_total(conn: psycopg.Connection[Any], schema: str) -> dict[int, int]:
    rows = conn.execute(
        f'SELECT kafka_partition, count(*) FROM "{schema}".audit_events GROUP BY 1'
    ).fetchall()
    return dict(rows)


def test_replay_refuses_a_running_group(
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
        [audit_event(i) for i in range(30)],
        stamps_ms=[1_700_000_000_000] * 30,
    )
    group = unique("g")
    worker_threads(
        stack_settings, WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 30, timeout=60)
    before = offsets_rows(pg_conn, sink_schema, group)
    result = run_cli(
        stack_settings,
        "replay_cmd",
        *("--group", group, "--topic", topic, "--schema", sink_schema, "--from-beginning"),
    )
    assert result.returncode == 1
    assert "stop its workers first" in result.stderr
    assert offsets_rows(pg_conn, sink_schema, group) == before


def test_lag_json_reports_every_group_of_the_schema(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    group = unique("g")
    _landed_topic(stack_settings, topic, sink_schema, pg_conn, worker_threads, group, old=40, new=0)
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(40, 65)],
        stamps_ms=[int(time.time() * 1000) - 120_000] * 25,
    )
    result = run_cli(stack_settings, "lag_cmd", "--schema", sink_schema, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (entry,) = report["groups"]
    assert (entry["group"], entry["lag"], entry["activity"]) == (group, 25, "idle")
    assert sum(p["end_offset"] for p in entry["partitions"]) == 65
    lagging = [p for p in entry["partitions"] if p["lag"]]
    assert lagging
    assert all(p["event_time_lag_s"] >= 120 for p in lagging)

    table = run_cli(stack_settings, "lag_cmd", "--schema", sink_schema, "--group", group)
    assert table.returncode == 0, table.stderr
    assert group in table.stdout
    assert "event-time lag" in table.stdout


def test_dlq_show_and_redrive(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    dlq = make_topic(name=dead_letter_topic(topic), partitions=1)
    now = int(time.time() * 1000)
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(1), audit_event(2, action=""), b"not avro"],
        stamps_ms=[now] * 3,
    )
    worker_threads(
        stack_settings,
        WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema),
    )
    with ops_clients(stack_settings) as (reader, _groups):
        assert wait_for(lambda: topic_size(reader, dlq) == 2, timeout=60)

    shown = run_cli(stack_settings, "dlq_cmd", "show", topic, "--schema", sink_schema)
    assert shown.returncode == 0, shown.stderr
    assert "CheckViolation" in shown.stdout
    assert "DecodeError" in shown.stdout
    assert "23514" in shown.stdout  # a sample's error message

    args = ("redrive", topic, "--schema", sink_schema, "--error-class", "CheckViolation")
    dry = run_cli(stack_settings, "dlq_cmd", *args, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would redrive 1;" in dry.stdout
    assert redriven_positions(pg_conn, sink_schema, dlq) == {}

    pg_conn.execute(
        f'ALTER TABLE "{sink_schema}".audit_events DROP CONSTRAINT audit_events_action_check'
    )
    done = run_cli(stack_settings, "dlq_cmd", *args)
    assert done.returncode == 0, done.stderr
    assert "redrove 1;" in done.stdout
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 2, timeout=60)
    again = run_cli(stack_settings, "dlq_cmd", *args)
    assert "redrove 0; skipped 1 already redriven" in again.stdout
    assert count_rows(pg_conn, sink_schema, "audit_events") == 2


@pytest.mark.chaos
def test_a_killed_shadow_replay_resumes_and_completes_without_duplicates(
    stack_settings: Settings,
    topic: str,
    shadow_schema: str,
    pg_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    count = 20_000
    now = int(time.time() * 1000)
    produce_stamped(
        stack_settings,
        topic,
        [audit_event(i) for i in range(count)],
        stamps_ms=[now - count + i for i in range(count)],
    )
    args = ("--sink", "audit", "--topic", topic, "--target-schema", shadow_schema)
    command, env = cli_command(
        stack_settings, "replay_cmd", *args, "--from-beginning", "--rate", "2000"
    )
    log = tmp_path / "replay.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for(
            lambda: (
                has_table(pg_conn, shadow_schema, "audit_events")
                and count_rows(pg_conn, shadow_schema, "audit_events") >= 3000
            ),
            timeout=90,
        ), log.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)  # no drain, no goodbye to the group
        process.wait(timeout=10)
    finally:
        process.kill()
    interrupted_at = count_rows(pg_conn, shadow_schema, "audit_events")
    assert interrupted_at < count

    resumed = run_cli(stack_settings, "replay_cmd", *args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "replayed" in resumed.stdout
    total, distinct = pg_conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{shadow_schema}".audit_events'
    ).fetchone() or (0, 0)
    assert (total, distinct) == (count, count)
    positions = stored_offsets(pg_conn, shadow_schema, f"sidestream.replay.audit.{shadow_schema}")
    assert sum(offset or 0 for offset in positions.values()) == count
