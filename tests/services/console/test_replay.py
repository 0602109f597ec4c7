"""The Replay page: its dry-run plan matches ``sidestream replay --dry-run``; a run from
the console re-reads the range (adding no rows), with progress, and is audited;
read-only principals cannot start one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from consumers.embedded import EmbeddedWorker
from schemas import AuditEvent, EventDeserializer
from tests.consumers.ops.support import ops_clients, produce_stamped, read_topic, topic_size
from tests.consumers.support import count_rows
from tests.services.console.conftest import ConsoleEnv, csrf_of
from tests.support.events import audit_event
from tests.support.waiting import wait_for

_CELL = re.compile(r'data-testid="(new-offset|reprocess)">([\d,]+)<')


def landed_history(
    env: ConsoleEnv, worker_threads: Any, pg_conn: psycopg.Connection[Any]
) -> datetime:
    """60 audit events, half stamped two hours ago and half 30 minutes ago, landed by a
    worker that is then stopped (a replay needs an idle group). Returns a time between."""
    now = datetime.now(UTC)
    old, new = now - timedelta(hours=2), now - timedelta(minutes=30)
    stamps = [int(old.timestamp() * 1000)] * 30 + [int(new.timestamp() * 1000)] * 30
    produce_stamped(env.settings, env.topic, [audit_event(i) for i in range(60)], stamps_ms=stamps)
    worker: EmbeddedWorker = worker_threads(env.settings, env.options)
    assert wait_for(lambda: count_rows(pg_conn, env.schema, "audit_events") == 60, timeout=60)
    worker.shutdown()
    return now - timedelta(hours=1)


def stored(pg_conn: psycopg.Connection[Any], env: ConsoleEnv) -> int:
    """The sum of the group's next offsets in the console's schema, claimed by a worker."""
    rows = pg_conn.execute(
        f'SELECT next_offset, owner FROM "{env.schema}".consumer_offsets WHERE group_id = %s',
        (env.group,),
    ).fetchall()
    assert all(owner != "sidestream-replay" for _, owner in rows), rows  # a worker claimed them
    return sum(offset or 0 for offset, _ in rows)


def cli_dry_run(env: ConsoleEnv, *args: str) -> dict[int, tuple[int, int]]:
    """``sidestream replay ... --dry-run``: partition → (new offset, re-read)."""
    command = [sys.executable, "-m", "sidestream", "replay", "--group", env.group]
    command += ["--topic", env.topic, "--schema", env.schema, *args, "--dry-run"]
    environment = {
        **os.environ,
        "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS": env.settings.kafka_bootstrap_servers,
        "SIDESTREAM_POSTGRES_DSN": env.settings.postgres_dsn.get_secret_value(),
    }
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {}
    for line in done.stdout.splitlines():
        cells = [c.strip().replace(",", "") for c in line.split("│")[1:-1]]
        if len(cells) == 8 and cells[0].isdigit():
            rows[int(cells[0])] = (int(cells[3]), int(cells[6]))
    assert rows, done.stdout
    return rows


def ui_plan(html: str) -> dict[int, tuple[int, int]]:
    partitions = [int(p) for p in re.findall(r'<tr data-partition="(\d+)">', html)]
    cells = [int(v.replace(",", "")) for _, v in _CELL.findall(html)]
    pairs = list(zip(cells[::2], cells[1::2], strict=True))
    return dict(zip(partitions, pairs, strict=True))


def test_the_ui_plan_matches_the_cli_dry_run_and_a_run_re_reads_the_range_once(
    console_env: ConsoleEnv,
    operator: TestClient,
    reader: TestClient,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    env = console_env
    since = landed_history(env, worker_threads, pg_conn).isoformat()

    page = operator.get("/replay", params={"sink": "audit", "start": "time", "from_time": since})
    assert page.status_code == 200
    plan = ui_plan(page.text)
    assert plan == cli_dry_run(env, "--from-time", since)
    assert sum(reread for _, reread in plan.values()) == 30
    assert "<strong>30</strong> records to re-read" in page.text
    offsets = operator.get("/replay", params={"sink": "audit", "start": "offset", "to_offset": "5"})
    assert ui_plan(offsets.text) == cli_dry_run(env, "--to-offset", "5")

    form = {
        "csrf": csrf_of(page.text),
        "sink": "audit",
        "start": "time",
        "from_time": since,
        "rate": "1000",
    }
    refused = reader.post("/replay/run", data={**form, "csrf": csrf_of(reader.get("/replay").text)})
    assert refused.status_code == 403

    started = operator.post("/replay/run", data=form, follow_redirects=False)
    assert started.status_code == 303
    job_url = started.headers["location"]
    assert wait_for(
        lambda: 'data-testid="job-state">completed<' in operator.get(f"{job_url}/progress").text,
        timeout=120,
        interval=0.5,
    )
    progress = operator.get(f"{job_url}/progress").text
    assert 'data-testid="job-done">30<' in progress
    assert count_rows(pg_conn, env.schema, "audit_events") == 60  # re-read, nothing added
    # The run's worker claimed the group's partitions in the live schema and moved them on
    # to the end (not, say, in the default schema).
    assert stored(pg_conn, env) == 60

    with ops_clients(env.settings) as (topic_reader, _groups):
        assert wait_for(lambda: topic_size(topic_reader, env.audit_topic) == 1, timeout=30)
        (message,) = read_topic(topic_reader, env.audit_topic)
    event = EventDeserializer().deserialize(message.value() or b"", env.audit_topic)
    assert isinstance(event, AuditEvent)
    assert (event.actor_id, event.action, event.resource_id) == (
        "test-operator",
        "console.replay.run",
        env.group,
    )
    assert event.details["records"] == "30"
    assert "completed" in operator.get("/replay").text


def test_a_shadow_replay_from_the_console_compares_with_the_live_table(
    console_env: ConsoleEnv,
    operator: TestClient,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
    unique: Callable[[str], str],
) -> None:
    env = console_env
    landed_history(env, worker_threads, pg_conn)
    shadow = unique("shadow")
    try:
        page = operator.get("/replay")
        form = {"csrf": csrf_of(page.text), "sink": "audit", "start": "beginning"}
        started = operator.post(
            "/replay/run", data={**form, "shadow": shadow}, follow_redirects=False
        )
        job_url = started.headers["location"]
        assert wait_for(
            lambda: (
                'data-testid="job-state">completed<' in operator.get(f"{job_url}/progress").text
            ),
            timeout=120,
            interval=0.5,
        )
        assert "compare the shadow" in operator.get(job_url).text
        compare = operator.get("/replay/compare", params={"sink": "audit", "shadow": shadow})
        assert 'data-testid="verdict">the same rows<' in compare.text
        assert count_rows(pg_conn, shadow, "audit_events") == 60

        (gone,) = pg_conn.execute(
            f'DELETE FROM "{shadow}".audit_events WHERE event_id IN'
            f' (SELECT event_id FROM "{shadow}".audit_events LIMIT 1) RETURNING event_id'
        ).fetchone() or (None,)
        differ = operator.get("/replay/compare", params={"sink": "audit", "shadow": shadow})
        assert 'data-testid="verdict">they differ<' in differ.text
        assert str(gone) in differ.text  # in the sample of ids only the live table has
    finally:
        pg_conn.execute(f'DROP SCHEMA IF EXISTS "{shadow}" CASCADE')


def test_a_run_stopped_from_the_console_resumes_from_its_stored_offsets(
    console_env: ConsoleEnv,
    operator: TestClient,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    env = console_env
    landed_history(env, worker_threads, pg_conn)
    csrf = csrf_of(operator.get("/replay").text)
    # 60 records at 4 per second: long enough to stop it half way.
    form = {"csrf": csrf, "sink": "audit", "start": "beginning", "rate": "4"}
    job_url = operator.post("/replay/run", data=form, follow_redirects=False).headers["location"]

    def progressed() -> bool:
        # Stop once rows flow: stopping a worker mid-join can leave the local broker's
        # group without assignments (a known gap of the local broker, see README).
        text = operator.get(f"{job_url}/progress").text
        return not re.search(r'data-testid="job-done">0<', text) and "running" in text

    assert wait_for(progressed, timeout=90, interval=0.2)
    operator.post(f"{job_url}/stop", data={"csrf": csrf})
    assert wait_for(
        lambda: 'data-testid="job-state">stopped<' in operator.get(f"{job_url}/progress").text,
        timeout=60,
        interval=0.5,
    )
    done = int(re.findall(r'data-testid="job-done">([\d,]+)<', operator.get(job_url).text)[0])
    assert done < 60

    resumed = operator.post(
        "/replay/run",
        data={"csrf": csrf, "sink": "audit", "resume": "1"},
        follow_redirects=False,
    ).headers["location"]
    wait_for(
        lambda: 'data-testid="job-state">completed<' in operator.get(f"{resumed}/progress").text,
        timeout=120,
        interval=0.5,
    )
    rest = operator.get(f"{resumed}/progress").text
    assert 'data-testid="job-state">completed<' in rest, rest
    assert f'data-testid="job-total">{60 - done}<' in rest  # only what the first run left
    assert stored(pg_conn, env) == 60
    assert count_rows(pg_conn, env.schema, "audit_events") == 60
