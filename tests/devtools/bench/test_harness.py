"""The harness's flame graphs: py-spy attached to a running process (``bench --profile``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.bench import harness
from devtools.bench.harness import profiled

_BUSY = "import time\nwhile True:\n    sum(range(10_000))\n"


def test_a_flame_graph_of_a_running_process_is_written(tmp_path: Path) -> None:
    if harness.py_spy() is None:
        pytest.skip("py-spy is a dev dependency: make setup installs it")
    child = subprocess.Popen([sys.executable, "-c", _BUSY])
    try:
        with profiled(child.pid, tmp_path / "flame.svg", rate=50) as recording:
            time.sleep(1.5)
    finally:
        child.kill()
        child.wait(timeout=10)
    assert recording.path == tmp_path / "flame.svg", recording.problem
    assert "<svg" in recording.path.read_text()
    assert recording.seconds >= 1.5


def test_without_py_spy_the_problem_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(harness, "py_spy", lambda: None)
    with profiled(1, tmp_path / "flame.svg") as recording:
        pass
    assert recording.path is None
    assert "py-spy not installed" in recording.problem
