"""The launcher against real binaries: idempotent start, status, stop, and clear failures.

These start their own servers on free ports in a temporary stack dir, so they never
disturb the session's stack.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.localstack import LocalStack
from devtools.localstack.kafka import KafkaServer
from devtools.localstack.postgres import PostgresServer, reachable_by_server_user, running_as_root
from devtools.localstack.process import process_cmdline, wait_until
from devtools.localstack.redis import RedisServer
from runtime import Settings, StackError

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(stack_dir=tmp_path, port=free_port())
    yield server
    server.stop()


def test_session_stack_is_healthy(stack_settings: Settings) -> None:
    statuses = LocalStack(stack_settings).status()
    assert [s.name for s in statuses] == ["kafka", "postgres", "redis"]
    assert all(s.healthy and s.pid for s in statuses), statuses


def test_up_twice_is_harmless(stack_settings: Settings) -> None:
    stack = LocalStack(stack_settings)
    before = [s.pid for s in stack.status()]
    after = [s.pid for s in stack.up()]
    assert before == after


def test_start_stop_and_status_of_one_server(redis_server: RedisServer) -> None:
    assert not redis_server.status().running
    first = redis_server.start()
    assert first.healthy
    assert first.pid
    assert redis_server.start().pid == first.pid  # second start: same process
    assert redis_server.stop() is True
    assert process_cmdline(first.pid) is None
    assert redis_server.stop() is False


def test_status_notices_a_killed_server(redis_server: RedisServer) -> None:
    pid = redis_server.start().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not redis_server.status().running, timeout=10)
    status = redis_server.status()
    assert not status.healthy
    assert "not running" in status.detail


def test_status_notices_a_frozen_broker(tmp_path: Path) -> None:
    server = KafkaServer(stack_dir=tmp_path, port=free_port())
    try:
        pid = server.start().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            status = server.status()
            assert status.running
            assert not status.healthy
        finally:
            os.kill(pid, signal.SIGCONT)
        assert wait_until(lambda: server.status().healthy, timeout=15)
    finally:
        server.stop()


def test_a_port_in_use_fails_fast_naming_the_port_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = RedisServer(stack_dir=tmp_path, port=port)
        with pytest.raises(
            StackError, match=rf"port {port} is already in use.*SIDESTREAM_REDIS_URL"
        ):
            server.start()
    assert server.pidfile.read() is None


def test_a_missing_binary_fails_fast_naming_the_setting(tmp_path: Path) -> None:
    server = KafkaServer(stack_dir=tmp_path, port=free_port(), binary=tmp_path / "no-tansu")
    with pytest.raises(StackError, match="SIDESTREAM_TANSU_BINARY"):
        server.start()


def test_down_never_kills_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        server = RedisServer(stack_dir=tmp_path, port=free_port())
        server.pidfile.write(stranger.pid)  # a stale PID file pointing at someone else
        assert server.stop() is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_the_cli_reports_bad_configuration_in_one_line() -> None:
    env = {**os.environ, "SIDESTREAM_KAFKA_BOOTSRAP_SERVERS": "x:1"}
    result = subprocess.run(
        [sys.executable, "-m", "sidestream", "dev", "status"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS" in lines[0]


@pytest.mark.skipif(not running_as_root(), reason="the unprivileged-user path only runs as root")
def test_postgres_from_a_directory_the_server_user_cannot_enter(tmp_path: Path) -> None:
    """A clone under a 0700 directory (like /root) keeps data and binaries under /tmp."""
    locked = tmp_path / "home"
    locked.mkdir(mode=0o700)
    stack_dir = locked / "project" / ".stack"
    assert not reachable_by_server_user(locked / "project")

    bundled = PostgresServer(stack_dir=tmp_path / "unused", port=1, database="x").bindir
    private_bin = locked / "site" / bundled.parent.parent.name / bundled.parent.name
    private_bin.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(bundled.parent), str(private_bin)], check=True)
    libs = bundled.parent.parent.parent / f"{bundled.parent.parent.name}.libs"
    if libs.is_dir():
        subprocess.run(["cp", "-a", str(libs), str(locked / "site" / libs.name)], check=True)

    server = PostgresServer(
        stack_dir=stack_dir, port=free_port(), database="sidestream", bindir=private_bin / "bin"
    )
    try:
        status = server.start()
        assert status.healthy
        assert not server.pgdata.is_relative_to(locked)
        assert not server.bindir.is_relative_to(locked)
        with psycopg.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname="sidestream"
        ) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("sidestream",)
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(server.pgdata.parent.parent)], check=False)
