"""Every way a command fails is one line with the right exit code (sidestream.errors).

Real CLI processes (``python -m sidestream``) against ports where nothing listens, a
stopped private broker, and the real stack for bad input.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.migrations import migrate
from services import MIGRATION_SOURCES
from sidestream.replay_cmd import _plan_warnings
from tests.sidestream.support import cli, cli_env, dead_servers, live_servers, one_line


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connecting is refused, no one else can take it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


POSTGRES_COMMANDS = [
    ("db", "migrate"),
    ("lag",),
    ("dlq", "show", "sidestream.audit"),
    ("dlq", "redrive", "sidestream.audit"),
    ("replay", "--sink", "audit", "--from-time", "2h", "--dry-run"),
    ("notifications", "show"),
    ("notifications", "retry", "--all"),
    ("tenants", "list"),
    ("keys", "create", "--tenant", "acme"),
]


@pytest.mark.parametrize("command", POSTGRES_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_postgres_away_is_one_line_and_exit_1(
    tmp_path: Path, dead_port: int, command: tuple[str, ...]
) -> None:
    result = cli(tmp_path, *command, **dead_servers(dead_port))
    assert result.returncode == 1
    assert one_line(result) == (
        f"error: cannot reach Postgres at 127.0.0.1:{dead_port} (connection refused) — "
        "is the stack up? `make up`"
    )


KAFKA_COMMANDS = [("topics", "apply"), ("topics", "plan"), ("load", "--count", "10")]


@pytest.mark.parametrize("command", KAFKA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_kafka_away_is_one_line_and_exit_1(
    tmp_path: Path, dead_port: int, command: tuple[str, ...]
) -> None:
    result = cli(tmp_path, *command, **dead_servers(dead_port))
    assert result.returncode == 1
    assert one_line(result) == (
        f"error: cannot reach Kafka at 127.0.0.1:{dead_port} (connection refused) — "
        "is the stack up? `make up`"
    )


@pytest.mark.parametrize(
    "command",
    [
        ("dlq", "show", "sidestream.audit"),
        ("replay", "--sink", "audit", "--from-time", "2h", "--dry-run"),
    ],
    ids=lambda c: c[0],
)
def test_kafka_away_with_postgres_up(
    tmp_path: Path, stack_settings: Settings, dead_port: int, command: tuple[str, ...]
) -> None:
    settings = {**live_servers(stack_settings), "kafka_bootstrap_servers": f"127.0.0.1:{dead_port}"}
    result = cli(tmp_path, *command, **settings)
    assert result.returncode == 1
    assert one_line(result).startswith(f"error: cannot reach Kafka at 127.0.0.1:{dead_port} (")


def test_a_stopped_private_broker(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    broker = KafkaServer(stack_dir=tmp_path / "broker", port=port)
    broker.start()
    broker.stop()
    result = cli(tmp_path, "topics", "apply", kafka_bootstrap_servers=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert one_line(result) == (
        f"error: cannot reach Kafka at 127.0.0.1:{port} (connection refused) — "
        "is the stack up? `make up`"
    )


def test_production_profile_names_the_setting_instead(tmp_path: Path, dead_port: int) -> None:
    result = cli(tmp_path, "topics", "plan", profile="production", **dead_servers(dead_port))
    assert result.returncode == 1
    assert one_line(result).endswith(
        "— check SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS and that the server is up"
    )


def test_a_worker_with_everything_away_says_so_once_and_is_not_ready(
    tmp_path: Path, dead_port: int
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sidestream", "worker", "run", "audit"],
        env=cli_env(tmp_path, **dead_servers(dead_port)),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready_codes = []
    try:
        deadline = time.monotonic() + 60
        url = None
        assert process.stderr is not None
        lines: list[str] = []
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            found = re.search(r"/readyz on (http://\S+)", line)
            if found:
                url = found.group(1)
        assert url is not None, lines
        time.sleep(12)  # librdkafka would have printed ~250 FAIL lines by now
        try:
            urllib.request.urlopen(f"{url}/readyz", timeout=5)  # noqa: S310  # http://127.0.0.1
            ready_codes.append(200)
        except urllib.error.HTTPError as exc:
            ready_codes.append(exc.code)
    finally:
        process.send_signal(signal.SIGTERM)
        _out, rest = process.communicate(timeout=60)
    stderr = "".join(lines) + rest
    assert ready_codes == [503]
    assert "%3|" not in stderr
    assert "FAIL" not in stderr
    kafka = [line for line in stderr.splitlines() if "cannot reach Kafka" in line]
    postgres = [line for line in stderr.splitlines() if "cannot reach Postgres" in line]
    assert len(kafka) == 1, stderr
    assert f"127.0.0.1:{dead_port} (connection refused); retrying" in kafka[0]
    assert len(postgres) == 1, stderr
    assert len(stderr.splitlines()) < 12, stderr


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (
            {"kafka_extra": '{"no.such.property": "1"}'},
            "error: invalid Kafka client configuration: No such configuration property: "
            '"no.such.property" — check SIDESTREAM_KAFKA_EXTRA',
        ),
        (
            {"kafka_bootstrap_sever": "x:1"},
            "error: unknown setting SIDESTREAM_KAFKA_BOOTSTRAP_SEVER; did you mean "
            "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS?",
        ),
    ],
    ids=["kafka-extra", "unknown-setting"],
)
def test_configuration_errors_are_one_line_and_exit_2(
    tmp_path: Path, dead_port: int, settings: dict[str, str], expected: str
) -> None:
    result = cli(tmp_path, "topics", "plan", **{**dead_servers(dead_port), **settings})
    assert result.returncode == 2
    assert one_line(result) == expected


BAD_SCHEMA_COMMANDS = [
    ("db", "migrate", "--schema", 'Bad"Schema'),
    ("worker", "run", "audit", "--schema", "public -c statement_timeout=1"),
    ("lag", "--schema", "a b"),
    ("dlq", "show", "t", "--schema", "x;y"),
    ("dlq", "redrive", "t", "--schema", "Public"),
    ("replay", "--sink", "audit", "--from-beginning", "--schema", "x-y"),
    ("replay", "--sink", "audit", "--from-beginning", "--target-schema", "public -c x=1"),
    ("notifications", "show", "--schema", "1x"),
    ("notifications", "retry", "--all", "--schema", "a'b"),
    ("api", "--schema", "a.b"),
]


@pytest.mark.parametrize("command", BAD_SCHEMA_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_schema_option_is_validated(
    tmp_path: Path, dead_port: int, command: tuple[str, ...]
) -> None:
    # Refused before any server is contacted: the dead ports are never reached.
    result = cli(tmp_path, *command, **dead_servers(dead_port))
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("error: Invalid value for '--")
    assert "invalid schema name" in line


def test_a_quote_in_the_schema_creates_nothing(
    tmp_path: Path, stack_settings: Settings, pg_conn: psycopg.Connection[Any]
) -> None:
    result = cli(
        tmp_path, "db", "migrate", "--schema", 'Bad"Schema', **live_servers(stack_settings)
    )
    assert result.returncode == 2
    found = pg_conn.execute(
        "SELECT count(*) FROM pg_namespace WHERE nspname = 'Bad\"Schema'"
    ).fetchone()
    assert found == (0,)


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = cli(tmp_path, "api", "--port", "99999")
    assert result.returncode == 2
    assert one_line(result) == (
        "error: Invalid value for '--port': Input should be less than or equal to 65535 "
        "(see `sidestream api --help`)"
    )


def test_user_input_is_never_markup(tmp_path: Path, dead_port: int) -> None:
    result = cli(
        tmp_path, "replay", "--group", "g", "--topic", "t", "--from-time", "[/bold]x",
        **dead_servers(dead_port),
    )  # fmt: skip
    assert result.returncode == 2  # bad input (tests/sidestream/test_bad_input.py)
    line = one_line(result)
    assert "MarkupError" not in line
    assert line.startswith("error: Invalid value for '--from-time': '[/bold]x' is neither a")


def test_an_unknown_command_isone_line(tmp_path: Path) -> None:
    result = cli(tmp_path, "no-such-command")
    assert result.returncode == 2
    assert one_line(result) == "error: No such command 'no-such-command'. (see `sidestream --help`)"


def test_replay_warns_about_an_unknown_group_and_a_future_start(
    tmp_path: Path,
    stack_settings: Settings,
    make_topic: Callable[..., str],
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
) -> None:
    topic = make_topic(partitions=2)
    migrate(pg_conn, MIGRATION_SOURCES, schema=pg_schema)  # offsets live there, none stored
    result = cli(
        tmp_path, "replay", "--group", "no-such-group[/red]", "--topic", topic,
        "--from-time", "2099-01-01T00:00:00Z", "--dry-run", "--schema", pg_schema,
        **live_servers(stack_settings),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith(
        f"warning: group no-such-group[/red] has no stored offsets for {topic}"
    )
    assert warnings[1].startswith("warning: --from-time 2099-01-01T00:00:00+00:00 is in the future")
    assert "dry run: replay no-such-group[/red]" in result.stdout


def test_no_warning_for_a_known_group_or_a_past_start() -> None:
    from datetime import UTC, datetime, timedelta

    from consumers.ops import EndOffsets, FromTime, PartitionPlan, ReplayPlan
    from consumers.ops.groups import Activity, GroupActivity

    now = datetime(2026, 1, 1, tzinfo=UTC)
    plan = ReplayPlan(
        group="g",
        topic="t",
        schema="public",
        start=FromTime(now - timedelta(hours=1)),
        partitions=(PartitionPlan("t", 0, 5, None, 3, EndOffsets(0, 10, 10), "time (broker)"),),
        activity=GroupActivity("g", Activity.IDLE, "EMPTY", 0, "has no live members"),
    )
    assert _plan_warnings(plan, FromTime(now - timedelta(hours=1)), shadow=False, now=now) == []
    fresh = PartitionPlan("t", 0, None, None, 0, EndOffsets(0, 10, 10), "beginning")
    shadow = _plan_warnings(
        dataclasses.replace(plan, partitions=(fresh,)),
        FromTime(now + timedelta(hours=1)),
        shadow=True,
        now=now,
    )
    assert len(shadow) == 1
    assert "in the future" in shadow[0]


def test_postgres_that_answers_but_refuses_names_the_fix(
    tmp_path: Path, stack_settings: Settings, unique: Callable[[str], str]
) -> None:
    live = live_servers(stack_settings)
    missing_db = live["postgres_dsn"].rsplit("/", 1)[0] + "/no_such_database"
    result = cli(tmp_path, "db", "migrate", **{**live, "postgres_dsn": missing_db})
    assert result.returncode == 1
    port = stack_settings.postgres_port
    assert one_line(result) == (
        f'error: Postgres at 127.0.0.1:{port}: database "no_such_database" does not exist '
        "— check SIDESTREAM_POSTGRES_DSN"
    )
    unmigrated = cli(tmp_path, "notifications", "show", "--schema", unique("nothing"), **live)
    assert unmigrated.returncode == 1
    assert one_line(unmigrated) == (
        'error: Postgres: relation "notifications" does not exist — run `sidestream db migrate`'
    )
