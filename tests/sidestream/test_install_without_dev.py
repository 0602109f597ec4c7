"""A production install (``requirements-runtime.lock`` + the package, no ``dev`` extra)
has a working CLI: workers and the API need none of the developer tools, and a
developer command says in one line what to install instead of a traceback."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only the runtime lock and the package's own wheel.

    Built once per test run: under xdist the module's tests may land on several workers,
    so the first builds it (under a lock, in the run's shared temp dir) and the others
    reuse it — building it again costs a minute of pip per worker and proves nothing more.
    """
    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # the run's own dir, above each worker's
    home = shared / "runtime-venv"
    with (shared / "runtime-venv.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / "built").exists():
            shutil.rmtree(home, ignore_errors=True)  # a build that failed half-way
            _build(home)
            (home / "built").touch()
    return home / "venv" / "bin"


def _build(home: Path) -> None:
    venv.create(home / "venv", with_pip=True)
    python = home / "venv" / "bin" / "python"
    quiet = ["-q", "--disable-pip-version-check"]
    lock = ROOT / "requirements-runtime.lock"
    subprocess.run(
        [python, "-m", "pip", "install", *quiet, "--require-hashes", "-r", lock], check=True
    )
    # The wheel is built by this (dev) environment: the runtime lock has no setuptools.
    build = ["wheel", *quiet, "--no-deps", "--no-build-isolation", "-w", str(home / "wheel")]
    subprocess.run([sys.executable, "-m", "pip", *build, str(ROOT)], check=True)
    (wheel,) = (home / "wheel").glob("sidestream-*.whl")
    subprocess.run([python, "-m", "pip", "install", *quiet, "--no-deps", wheel], check=True)


def _run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run outside the checkout, so nothing is imported from the source tree.
    return subprocess.run(
        [bin_dir / args[0], *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=bin_dir,
        check=False,
    )


def test_the_dev_extra_is_really_absent(runtime_venv: Path) -> None:
    result = _run(runtime_venv, "python", "-c", "import pytest")
    assert result.returncode != 0, "the runtime venv has pytest: the test proves nothing"


def test_the_cli_imports_and_lists_its_commands(runtime_venv: Path) -> None:
    imported = _run(runtime_venv, "python", "-c", "import sidestream.main")
    assert imported.returncode == 0, imported.stderr
    result = _run(runtime_venv, "sidestream", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("worker", "api", "replay", "demo", "bench"):
        assert command in result.stdout


def test_workers_are_listed_without_the_dev_extra(runtime_venv: Path) -> None:
    result = _run(runtime_venv, "sidestream", "worker", "list")
    assert result.returncode == 0, result.stderr
    assert "audit" in result.stdout
    assert "outbox-relay" in result.stdout


def test_a_developer_command_says_what_to_install(runtime_venv: Path) -> None:
    result = _run(runtime_venv, "sidestream", "deploy", "check")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "needs the developer tools" in lines[0]
    assert "sidestream[dev]" in lines[0]
