"""Running the real ``sidestream`` CLI in a subprocess, with chosen settings only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime import Settings


def cli_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDESTREAM_")}
    env.update(
        {
            "SIDESTREAM_STACK_DIR": str(tmp_path / "stack"),
            "SIDESTREAM_LOG_FORMAT": "console",
            "COLUMNS": "200",
        }
    )
    env.update({f"SIDESTREAM_{k.upper()}": v for k, v in settings.items()})
    return env


def cli(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # cwd: a directory without the worktree's .env, so only these settings apply.
    return subprocess.run(
        [sys.executable, "-m", "sidestream", *args],
        env=cli_env(tmp_path, **settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def dead_servers(port: int) -> dict[str, str]:
    return {
        "kafka_bootstrap_servers": f"127.0.0.1:{port}",
        "postgres_dsn": f"postgresql://postgres@127.0.0.1:{port}/sidestream",
        "redis_url": f"redis://127.0.0.1:{port}/0",
    }


def live_servers(settings: Settings) -> dict[str, str]:
    return {
        "kafka_bootstrap_servers": settings.kafka_bootstrap_servers,
        "postgres_dsn": settings.postgres_dsn.get_secret_value(),
        "redis_url": settings.redis_url.get_secret_value(),
    }
