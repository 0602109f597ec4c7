"""A copy of deploy/ per test, to break on purpose and see the checks notice."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from devtools.deploy import CheckReport, default_deploy_dir

Edit = Callable[[str, str, str], None]


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    """deploy/ copied under tmp_path (its relative paths, e.g. the compose build
    context ../.., keep working because the Dockerfile is inside the copy)."""
    target = tmp_path / "deploy"
    shutil.copytree(default_deploy_dir(), target)
    return target


@pytest.fixture
def edit(deploy_copy: Path) -> Edit:
    """``edit(relative_path, old, new)``: replace ``old`` (which must occur exactly once,
    so a test can never silently check an unchanged file) in the copy."""

    def replace(relative: str, old: str, new: str) -> None:
        path = deploy_copy / relative
        text = path.read_text()
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {relative}"
        path.write_text(text.replace(old, new))

    return replace


def error_messages(report: CheckReport) -> str:
    """Every error of a report, one per line (for assertions and failure output)."""
    return "\n".join(f"{f.check} {f.subject}: {f.message}" for f in report.errors)
