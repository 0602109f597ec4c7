"""The private stack: its own servers on free ports, faults on them, and nothing left
behind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from devtools.chaos.stack import PrivateStack
from runtime import Settings
from runtime.ports import refused_port


def test_settings_point_at_the_private_servers_and_the_proxy(
    stack_settings: Settings, tmp_path: Path
) -> None:
    with refused_port() as advertised:  # held: nobody else gets it meanwhile
        stack = PrivateStack(
            stack_settings, name="t", root=tmp_path, kafka_advertised_port=advertised
        )
        try:
            with pytest.raises(RuntimeError, match="not started"):
                _ = stack.settings  # the ports are chosen when the servers start
            stack.start()
            settings = stack.settings
            assert settings.kafka_bootstrap_servers == f"127.0.0.1:{advertised}"
            assert settings.postgres_port == stack.postgres.port != stack_settings.postgres_port
            assert settings.redis_port == stack.redis.port != stack_settings.redis_port
            command = stack.kafka.command()
            assert f"tcp://127.0.0.1:{stack.kafka.port}" in command  # listens on its own port
            flag = command.index("--advertised-listener-url")
            assert command[flag + 1] == f"tcp://127.0.0.1:{advertised}"  # clients: via the proxy
            assert all(server.status().healthy for server in stack.servers)
        finally:
            stack.close()
    assert not stack.directory.exists()


@pytest.mark.chaos
def test_postgres_crash_and_restart_keeps_committed_data(
    stack_settings: Settings, tmp_path: Path
) -> None:
    with PrivateStack(stack_settings, name="t", root=tmp_path) as stack:
        dsn = stack.settings.postgres_dsn.get_secret_value()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
            stack.crash_postgres()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        assert stack.postgres.pidfile.live_pid() is None
        stack.start_postgres()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (1000,)
    assert not any(tmp_path.iterdir())
