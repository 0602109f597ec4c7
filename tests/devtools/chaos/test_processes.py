"""Worker child processes: their environment, and a crash noticed at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.chaos.errors import ChaosError
from devtools.chaos.processes import WorkerGroup, WorkerProcess, worker_environment
from runtime import Settings


def test_the_environment_carries_the_settings(stack_settings: Settings, tmp_path: Path) -> None:
    settings = stack_settings.with_overrides(
        kafka_bootstrap_servers="127.0.0.1:1111",
        postgres_dsn="postgresql://postgres@127.0.0.1:2222/chaos",
        consumer_batch_max_records=123,
        stack_dir=tmp_path,
    )
    env = worker_environment(settings)
    assert env["SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:1111"
    assert env["SIDESTREAM_POSTGRES_DSN"].endswith(":2222/chaos")
    assert env["SIDESTREAM_CONSUMER_BATCH_MAX_RECORDS"] == "123"
    assert env["SIDESTREAM_STACK_DIR"] == str(tmp_path)


def test_a_member_that_exits_by_itself_is_reported(
    stack_settings: Settings, tmp_path: Path
) -> None:
    def spawn(n: int) -> WorkerProcess:
        return WorkerProcess(stack_settings, "no-such-worker", log=tmp_path / f"w{n}.log")

    group = WorkerGroup(spawn, 1).start()
    try:
        assert group.members[0].process.wait(timeout=60) != 0
        with pytest.raises(ChaosError, match="exited by itself"):
            group.check()
        assert not group.members[0].wait_ready(1)
    finally:
        group.close()
