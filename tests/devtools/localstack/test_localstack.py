"""The launcher against real binaries: idempotent start, status, stop, and clear failures.

These start their own servers on free ports (``port=0``: picked when the server starts)
in a temporary stack dir, so they never disturb the session's stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devtools.localstack import LocalStack
from devtools.localstack import server as server_module
from devtools.localstack.kafka import KafkaServer
from devtools.localstack.postgres import PostgresServer, reachable_by_server_user, running_as_root
from devtools.localstack.process import listens_on, port_is_free, process_cmdline, wait_until
from devtools.localstack.redis import RedisServer
from runtime import Settings, StackError
from runtime.ports import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(stack_dir=tmp_path, port=0)
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
    server = KafkaServer(stack_dir=tmp_path, port=0)
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
    server = KafkaServer(stack_dir=tmp_path, port=0, binary=tmp_path / "no-tansu")
    with pytest.raises(StackError, match="SIDESTREAM_TANSU_BINARY"):
        server.start()


def test_down_never_kills_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        server = RedisServer(stack_dir=tmp_path, port=0)
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
        stack_dir=stack_dir, port=0, database="sidestream", bindir=private_bin / "bin"
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


def test_port_zero_picks_a_port_at_start_and_keeps_it_on_restart(
    redis_server: RedisServer,
) -> None:
    assert redis_server.port == 0
    first = redis_server.start()
    assert first.healthy
    port = redis_server.port
    assert port != 0
    assert listens_on(first.pid or 0, port) is True
    redis_server.stop()
    assert redis_server.start().healthy
    assert redis_server.port == port  # its clients know this port


def test_port_zero_tries_another_port_when_one_is_taken_in_the_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race this launcher must survive: the port is free when picked and checked,
    then another process binds it before the server does. The server exits; the
    launcher sees the port taken and starts again on another one."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = int(squatter.getsockname()[1])
        picks = iter([taken])
        monkeypatch.setattr(server_module, "free_port", lambda host: next(picks, free_port()))
        checks = iter([True])  # the first check ran before the squatter came
        real_check = port_is_free
        monkeypatch.setattr(
            server_module,
            "port_is_free",
            lambda host, port: next(checks, None) or real_check(host, port),
        )
        server = RedisServer(stack_dir=tmp_path, port=0)
        try:
            status = server.start()
            assert status.healthy
            assert server.port not in (0, taken)
        finally:
            server.stop()


def test_a_second_stack_on_the_same_ports_is_refused(
    stack_settings: Settings, tmp_path: Path
) -> None:
    other = LocalStack(stack_settings.with_overrides(stack_dir=tmp_path / "other"))
    with pytest.raises(StackError, match=r"already in use"):
        other.up()
    assert all(not s.running for s in other.status())


def test_status_is_not_fooled_by_another_stack_answering_on_its_port(
    stack_settings: Settings, tmp_path: Path
) -> None:
    """This stack's Redis runs (on a port of its own) while its settings now name the
    session stack's port, where the session's Redis answers: the recorded process is
    alive, something answers, and still it is not healthy — it is not the one listening."""
    stack_dir = tmp_path / "mine"
    mine = RedisServer(stack_dir=stack_dir, port=0)
    pid = mine.start().pid
    assert pid is not None
    try:
        confused = LocalStack(stack_settings.with_overrides(stack_dir=stack_dir))
        statuses = {s.name: s for s in confused.status()}
        redis_status = statuses["redis"]
        assert redis_status.pid == pid
        assert redis_status.running
        assert not redis_status.healthy
        assert "does not listen" in redis_status.detail
        assert "another process listens there" in redis_status.detail
        assert not statuses["kafka"].healthy  # nothing recorded in this stack dir
        confused_redis = confused.server("redis")
        # `start` waits for the recorded process to serve the port, which it never will:
        # the default 30 s of that wait prove nothing 2 s do not.
        confused_redis.start_timeout = 2.0
        with pytest.raises(StackError, match=r"does not listen on port"):
            confused_redis.start()

        env = {
            **os.environ,
            "SIDESTREAM_STACK_DIR": str(stack_dir),
            "SIDESTREAM_REDIS_URL": stack_settings.redis_url.get_secret_value(),
            "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS": stack_settings.kafka_bootstrap_servers,
            "SIDESTREAM_POSTGRES_DSN": stack_settings.postgres_dsn.get_secret_value(),
        }
        result = subprocess.run(
            [sys.executable, "-m", "sidestream", "dev", "status"],
            capture_output=True,
            text=True,
            env={**env, "COLUMNS": "250"},
            check=False,
        )
        assert result.returncode == 1
        redis_line = next(line for line in result.stdout.splitlines() if "redis" in line)
        assert "healthy" not in redis_line
    finally:
        mine.stop()


def test_status_of_a_dead_recorded_pid_is_down_while_another_server_answers(
    stack_settings: Settings, tmp_path: Path
) -> None:
    stack_dir = tmp_path / "mine"
    mine = RedisServer(stack_dir=stack_dir, port=0)
    pid = mine.start().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: process_cmdline(pid) is None, timeout=10)
    confused = LocalStack(stack_settings.with_overrides(stack_dir=stack_dir))
    redis_status = confused.server("redis").status()
    assert not redis_status.running
    assert not redis_status.healthy  # although the session's Redis answers on that port


def test_postgres_in_a_stack_dir_too_deep_for_a_unix_socket() -> None:
    """``<dir>/.s.PGSQL.<port>`` must fit in 107 bytes: a deep stack dir keeps its data
    but gets a short socket directory under the temp dir, and the server starts."""
    # Under the temp dir, opened to the server user (pytest's tmp_path is 0700 for root,
    # which would move the data dir, and with it the socket, to the temp dir anyway).
    root = Path(tempfile.mkdtemp(prefix="sidestream-deep-"))
    deep = root / ("d" * 60) / ("e" * 60) / ".stack"
    deep.mkdir(parents=True)
    for directory in (root, *deep.relative_to(root).parents, deep.relative_to(root)):
        (root / directory).chmod(0o755)
    server = PostgresServer(stack_dir=deep, port=0, database="sidestream")
    try:
        assert len(str(deep / "postgres" / "run" / ".s.PGSQL.65535")) > 107
        socket_dir = server.socket_dir
        assert len(os.fsencode(socket_dir / ".s.PGSQL.65535")) <= 107
        assert server.pgdata.is_relative_to(deep)  # only the socket moves
        assert not socket_dir.is_relative_to(deep)
        status = server.start()
        assert status.healthy, status
        assert any(path.name == f".s.PGSQL.{server.port}" for path in socket_dir.iterdir())
        with psycopg.connect(
            host="127.0.0.1", port=server.port, user="postgres", dbname="sidestream"
        ) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
        shutil.rmtree(server.socket_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
