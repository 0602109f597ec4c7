"""Operator commands run as an operator runs them: a real ``sidestream`` CLI process.

A command module is run as ``python -c "from sidestream.<module> import app; app()"`` so it
works before it is registered in ``sidestream.main``; the child gets the test's settings.
"""

from __future__ import annotations

import subprocess
import sys

from runtime import Settings
from runtime.environment import child_environment

__all__ = ["cli_command", "run_cli"]


def cli_command(settings: Settings, module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that run ``sidestream.<module>`` with `args`."""
    code = f"from sidestream.{module} import app; app(prog_name='sidestream')"
    env = child_environment(settings, extra={"SIDESTREAM_LOG_FORMAT": "json", "COLUMNS": "200"})
    return [sys.executable, "-c", code, *args], env


def run_cli(settings: Settings, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sidestream.<module>`` to completion (3 minutes at most), output captured."""
    command, env = cli_command(settings, module, *args)
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, check=False
    )
