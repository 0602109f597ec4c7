"""A bad option value, or options that contradict each other, is one line naming the
option and what is expected, exit 2 — refused before any server is contacted
(sidestream.errors: ``checked``, ``UsageError``).

Real CLI processes (``python -m sidestream``) pointed at a port where nothing listens:
a command that got past its options would say "cannot reach …" and exit 1 instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sidestream.support import cli, dead_servers, one_line


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connecting is refused, no one else can take it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


REPLAY = ("replay", "--sink", "audit", "--dry-run")
DLQ_SHOW = ("dlq", "show", "sidestream.audit")
A_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"

#: (command, the option named, what the line says is expected).
BAD_VALUES = [
    ((*REPLAY, "--from-time", "yesterday"), "'--from-time'", "nor ISO 8601"),
    ((*REPLAY, "--from-time", "2h", "--to-offset", "x"), "'--to-offset'", "expected an offset N"),
    ((*REPLAY, "--to-offset", "0:-4"), "'--to-offset'", "all >= 0"),
    ((*REPLAY, "--from-beginning", "--partitions", "a,b"), "'--partitions'", "e.g. 0,2,5"),
    ((*REPLAY, "--from-beginning", "--partitions", "-1"), "'--partitions'", "e.g. 0,2,5"),
    (
        ("replay", "--sink", "nosuch", "--from-beginning"),
        "'--sink'",
        "choose one of analytics, audit, notifications",
    ),
    (
        ("replay", "--group", "g", "--topic", "bad topic", "--from-beginning"),
        "'--topic'",
        "not a Kafka topic name",
    ),
    ((*DLQ_SHOW, "--since", "yesterday"), "'--since'", "nor ISO 8601"),
    (("dlq", "redrive", "sidestream.audit", "--until", "5x"), "'--until'", "nor ISO 8601"),
    ((*DLQ_SHOW, "--offsets", "0:1", "--offsets", "1-2"), "'--offsets'", "PARTITION:OFFSET"),
    (("dlq", "show", "a/b"), "'topic'", "not a Kafka topic name"),
    ((*DLQ_SHOW, "--dlq-topic", ".."), "'--dlq-topic'", "not a Kafka topic name"),
    (("worker", "run", "audit", "--topic", "bad topic"), "'--topic'", "not a Kafka topic name"),
    (("worker", "run", "audit", "--group", " "), "'--group'", "not empty"),
    (("worker", "run", "nosuch"), "'NAME'", "unknown worker 'nosuch'"),
    (("notifications", "retry", "abc"), "'ids'", "expected a UUID"),
    (("tenants", "create", "bad tenant"), "'tenant'", "must be 1-64 of"),
    (("keys", "create", "--tenant", "bad tenant"), "'--tenant'", "must be 1-64 of"),
    (("keys", "revoke", "!!"), "'key'", "expected 16 hex digits"),
    (("load", "--count", "-1"), "'--count'", "greater than or equal to 1"),
    (("load", "--duration", "-1"), "'--duration'", "greater than or equal to 0.001"),
    (("load", "--kind", "nope"), "'--kind'", "unknown kind(s) ['nope']"),
    (("console", "--port", "99999"), "'--port'", "less than or equal to 65535"),
    (("demo", "--events", "-3"), "'--events'", "greater than or equal to 0"),
    (("schemas", "release", "nosuch"), "'SUBJECT'", "unknown subject 'nosuch'"),
]


@pytest.mark.parametrize(
    ("command", "option", "expected"), BAD_VALUES, ids=lambda v: " ".join(v) if v else ""
)
def test_a_bad_option_value_names_the_option_and_exits_2(
    tmp_path: Path, dead_port: int, command: tuple[str, ...], option: str, expected: str
) -> None:
    result = cli(tmp_path, *command, **dead_servers(dead_port))
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith(f"error: Invalid value for {option}: "), line
    assert expected in line
    assert line.endswith("--help`)")


CONTRADICTIONS = [
    ((*REPLAY,), "choose exactly one of --from-time, --to-offset, --from-beginning"),
    ((*REPLAY, "--from-beginning", "--to-offset", "3"), "choose exactly one of"),
    (("replay", "--from-beginning"), "--group and --topic are required without --sink"),
    (("replay", "--from-beginning", "--group", "g", "--topic", "t", "--rate", "5"), "need --sink"),
    ((*REPLAY, "--resume", "--from-beginning"), "give no start point"),
    (("notifications", "retry", A_UUID, "--all"), "give notification ids, or --all (not both)"),
]


@pytest.mark.parametrize(("command", "expected"), CONTRADICTIONS, ids=lambda v: " ".join(v))
def test_contradicting_options_are_a_usage_error(
    tmp_path: Path, dead_port: int, command: tuple[str, ...], expected: str
) -> None:
    result = cli(tmp_path, *command, **dead_servers(dead_port))
    assert result.returncode == 2, result.stderr
    line = one_line(result)
    assert line.startswith("error: ")
    assert expected in line
    assert line.endswith("--help`)")


@pytest.mark.parametrize("command", ["api", "console"])
def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path, dead_port: int, command: str) -> None:
    # Refused before the app starts (uvicorn would log its start-up and exit 3) and
    # before any server is contacted.
    result = cli(tmp_path, command, "--port", str(dead_port), **dead_servers(dead_port))
    assert result.returncode == 2, result.stderr
    assert one_line(result) == (
        f"error: cannot listen on 127.0.0.1:{dead_port} (address already in use) — choose "
        "another --port or --host, or stop what listens there"
    )
