"""Every worker with a server away: it retries, says so in one line, answers 503 on
``/readyz`` until the server is back, and exits 0 promptly on SIGTERM.

Real worker processes (``python -m sidestream worker run NAME``) against the test stack,
with one server's address replaced by a port where nothing listens — or, for Redis, a
private server stopped and started again under the worker.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from devtools.localstack.redis import RedisServer
from producers import EventPublisher
from runtime import Settings, new_registry
from runtime.migrations import migrate
from schemas import ChangeKind, EntityChanged
from services import MIGRATION_SOURCES, item_key
from services.cache.entry import Kind, decode_entry
from services.cache.keys import Keys
from services.workers import WORKERS
from tests.sidestream.support import cli, cli_env, live_servers

#: Sink-like workers that read a topic: they get a fresh one (claiming it needs Postgres).
_READERS = ("audit", "analytics", "notifications", "invalidation")

#: A bounded wait for a worker to exit after SIGTERM. Generous next to the ~1 s they take;
#: a wait for a pooled Postgres connection that SIGTERM does not end lasts 10 s.
_EXIT_S = 5.0


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connecting is refused, no one else can take it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


class _Worker:
    """``worker run NAME`` as a child process: its stderr lines and its ``/readyz``."""

    def __init__(
        self, tmp_path: Path, name: str, args: tuple[str, ...], settings: dict[str, str]
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sidestream", "worker", "run", name, *args],
            env=cli_env(tmp_path, metrics_port="0", consumer_retry_deadline_s="2", **settings),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.process.stderr or ()), daemon=True
        )
        self._reader.start()
        self._url: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def readyz(self) -> int | None:
        """``/readyz``'s status (``None``: not serving yet)."""
        if self._url is None:
            found = (re.search(r"/readyz on (http://\S+)", line) for line in list(self.lines))
            self._url = next((m.group(1) for m in found if m), None)
            if self._url is None:
                return None
        try:
            with urllib.request.urlopen(f"{self._url}/readyz", timeout=5):  # noqa: S310  # 127.0.0.1
                return 200
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def wait_for(self, check: Callable[[], bool], timeout_s: float = 90) -> bool:
        """Whether ``check`` came true (within ``timeout_s``) while the worker ran."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.5)
        return False

    def terminate(self, within_s: float = 60) -> int | None:
        """SIGTERM; the exit code, or ``None`` if it had not exited within ``within_s``
        (it is killed then)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            code = None
        self._reader.join(timeout=10)
        return code


def _watch_worker(
    tmp_path: Path,
    name: str,
    args: tuple[str, ...],
    settings: dict[str, str],
    *,
    exit_within_s: float = 60,
) -> tuple[bool, int | None, list[str]]:
    """Run ``worker run NAME``, wait until ``/readyz`` says 503 (or 90 s pass), SIGTERM it.

    Returns whether it reported not ready while running, its exit code (``None``: not
    within ``exit_within_s``) and its stderr.
    """
    worker = _Worker(tmp_path, name, args, settings)
    try:
        unready = worker.wait_for(lambda: worker.readyz() == 503)
    finally:
        code = worker.terminate(within_s=exit_within_s)
    return unready, code, worker.lines


def _assert_one_line_per_outage(lines: list[str], port: int) -> None:
    text = "".join(lines)
    assert "Traceback" not in text, text
    for raw in ("|FAIL|", "%3|", "%6|"):  # librdkafka's own lines
        assert raw not in text, text
    naming = [line for line in lines if str(port) in line]
    assert len(naming) == 1, text  # the outage, said once (rate-limited)
    assert len(lines) < 20, text


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_every_worker_with_kafka_away_retries_and_is_not_ready(
    tmp_path: Path,
    stack_settings: Settings,
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
    dead_port: int,
    name: str,
) -> None:
    migrate(pg_conn, MIGRATION_SOURCES, schema=pg_schema)
    settings = {**live_servers(stack_settings), "kafka_bootstrap_servers": f"127.0.0.1:{dead_port}"}
    unready, code, lines = _watch_worker(
        tmp_path, name, ("--schema", pg_schema), settings, exit_within_s=_EXIT_S
    )
    assert unready, "".join(lines)
    assert code == 0, "".join(lines)
    _assert_one_line_per_outage(lines, dead_port)
    assert "cannot reach Kafka" in next(line for line in lines if str(dead_port) in line)


def _own_topic_and_group(
    name: str, make_topic: Callable[..., str], unique: Callable[[str], str]
) -> tuple[str, ...]:
    """A reading worker's topic and group of its own: assigned, so it claims; and out of
    the default groups on the shared broker, where it would hold up the group joins of
    tests running beside it (the demo's workers once waited two minutes for partitions)."""
    if name not in _READERS:
        return ()
    return ("--topic", make_topic(partitions=1), "--group", unique("g"))


def _postgres_away(stack_settings: Settings, dead_port: int) -> dict[str, Any]:
    """The live servers' settings, with Postgres at a port where nothing listens."""
    return {
        **live_servers(stack_settings),
        "postgres_dsn": f"postgresql://postgres@127.0.0.1:{dead_port}/sidestream",
    }


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_every_worker_with_postgres_away_retries_and_is_not_ready(
    tmp_path: Path,
    stack_settings: Settings,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    dead_port: int,
    name: str,
) -> None:
    args = _own_topic_and_group(name, make_topic, unique)
    settings = _postgres_away(stack_settings, dead_port)
    unready, code, lines = _watch_worker(tmp_path, name, args, settings, exit_within_s=_EXIT_S)
    assert unready, "".join(lines)
    assert code == 0, "".join(lines)  # None: SIGTERM waited on the database
    _assert_one_line_per_outage(lines, dead_port)


@pytest.mark.parametrize("name", sorted(WORKERS))
def test_sigterm_while_waiting_for_postgres_exits_promptly(
    tmp_path: Path,
    stack_settings: Settings,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    dead_port: int,
    name: str,
) -> None:
    """SIGTERM as soon as the worker says Postgres is away — while its first call still
    waits for a pooled connection (10 s) — ends that wait: exit 0 within ``_EXIT_S``."""
    args = _own_topic_and_group(name, make_topic, unique)
    settings = _postgres_away(stack_settings, dead_port)
    worker = _Worker(tmp_path, name, args, settings)
    try:
        said = worker.wait_for(lambda: "cannot reach Postgres" in worker.text)
    finally:
        code = worker.terminate(within_s=_EXIT_S)
    assert said, worker.text
    assert code == 0, worker.text  # None: SIGTERM waited on the database
    assert "Traceback" not in worker.text


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("notify", "no notifications/notification_attempts/webhook_endpoints tables"),
        ("outbox-relay", "no outbox table in schema"),
    ],
)
def test_a_worker_without_its_tables_says_so_in_one_line(
    tmp_path: Path, stack_settings: Settings, pg_schema: str, name: str, expected: str
) -> None:
    result = cli(
        tmp_path, "worker", "run", name, "--schema", pg_schema, metrics_port="0",
        **live_servers(stack_settings),
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.splitlines()[-1]  # after the worker's start-up log lines
    assert line.startswith("error: ")
    assert expected in line
    assert line.endswith("(sidestream db migrate)")


def test_the_invalidation_worker_follows_redis_and_loses_nothing(
    tmp_path: Path,
    stack_settings: Settings,
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
) -> None:
    """Redis away while idle: not ready (nothing else would notice), one line naming Redis
    and the fix; an invalidation that arrives meanwhile is applied once Redis is back, and
    the worker is ready again."""
    migrate(pg_conn, MIGRATION_SOURCES, schema=pg_schema)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = RedisServer(stack_dir=tmp_path / "redis", port=port)
    server.start()
    topic = make_topic(partitions=1)
    settings = {**live_servers(stack_settings), "redis_url": f"redis://127.0.0.1:{port}/0"}
    args = ("--topic", topic, "--group", unique("g"), "--schema", pg_schema)
    worker = _Worker(tmp_path, "invalidation", args, settings)
    entry = Keys("sidestream").entry(item_key("acme", "project", "p1"))
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        assert worker.wait_for(lambda: worker.readyz() == 200), worker.text
        server.stop()
        assert worker.wait_for(lambda: worker.readyz() == 503), worker.text
        publisher = EventPublisher(settings=stack_settings, registry=new_registry())
        try:
            publisher.publish(
                EntityChanged.new(
                    tenant_id="acme",
                    producer="test",
                    entity_type="project",
                    entity_id="p1",
                    version=7,
                    change_kind=ChangeKind.UPDATED,
                ),
                topic=topic,
            )
            assert publisher.flush(10) == 0
        finally:
            publisher.close()
        server.start()

        def tombstoned() -> bool:
            found = decode_entry(client.get(entry))
            return found is not None and (found.kind, found.version) == (Kind.TOMBSTONE, 7)

        assert worker.wait_for(tombstoned), worker.text
        assert worker.wait_for(lambda: worker.readyz() == 200), worker.text
    finally:
        code = worker.terminate(within_s=_EXIT_S)
        client.close()
        server.stop()
    assert code == 0, worker.text
    assert "Traceback" not in worker.text
    outage = [line for line in worker.lines if "cannot reach Redis" in line]
    assert len(outage) == 1, worker.text
    assert f"at 127.0.0.1:{port} (connection refused); retrying — is the stack up?" in outage[0]
