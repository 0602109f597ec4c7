"""`make demo` is the README's main command: it must run to the end and say what it did."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

import psycopg
from psycopg import sql

from runtime import Settings
from runtime.environment import child_environment


def test_demo_runs_end_to_end_and_prints_a_summary(
    stack_settings: Settings, unique: Callable[[str], str]
) -> None:
    schema = unique("demo")
    env = child_environment(stack_settings, extra={"SIDESTREAM_POSTGRES_SCHEMA": schema})
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sidestream",
                "demo",
                "--events",
                "600",
                "--requests",
                "200",
                "--keep-stack",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = result.stdout
        assert "what landed in Postgres" in out
        assert "cache: hit ratio" in out
        assert "everything landed: yes" in out
        assert "processes drained cleanly on SIGTERM: yes" in out
        # Webhooks go to an endpoint the demo registered; its receiver checks signatures.
        assert re.search(r"\d+\s+webhooks\s+its\s+local\s+receiver", out), out[-3000:]
        assert "`make console`" in out  # the summary points to the operator console
        dead = re.search(r"and (\d+) landed in dead-letter topics", out)
        assert dead is not None
        assert int(dead.group(1)) >= 3
        # "what landed in Postgres": the events this run sent to each sink. The split is
        # random (the demo seeds its load with the time): a fixed floor such as "200 per
        # sink" failed whenever fewer than 200 of the 800 went to one sink.
        sent = {
            sink: int(count.replace(",", ""))
            for sink, count in re.findall(r"│ (audit|analytics|notifications) +│ ([\d,]+) ", out)
        }
        assert sorted(sent) == ["analytics", "audit", "notifications"], out[-3000:]
        with psycopg.connect(stack_settings.postgres_dsn.get_secret_value()) as conn:
            for sink, table in (
                ("audit", "audit_events"),
                ("analytics", "analytics_events"),
                ("notifications", "notifications"),
            ):
                query = sql.SQL("SELECT count(*), count(DISTINCT event_id) FROM {}").format(
                    sql.Identifier(schema, table)
                )
                total, distinct = conn.execute(query).fetchone() or (0, 0)
                # At least what this run sent (the workers' group may also pick up events
                # an earlier demo left unconsumed), each exactly once.
                assert total >= sent[sink] > 0, table
                assert distinct == total, table
    finally:
        with psycopg.connect(
            stack_settings.postgres_dsn.get_secret_value(), autocommit=True
        ) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
