"""The compatibility gate as CI runs it: the real CLI on a copy of the schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from schemas import AVRO_DIR


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidestream", "schemas", "check", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )


def _add_audit_version(root: Path, change: str) -> None:
    current = json.loads((root / "audit_event" / "v1.avsc").read_text())
    if change == "add-required":
        current["fields"].append({"name": "severity", "type": "string", "doc": "new"})
    elif change == "add-optional":
        current["fields"].append(
            {"name": "severity", "type": ["null", "string"], "default": None, "doc": "new"}
        )
    elif change == "remove-required":
        current["fields"] = [f for f in current["fields"] if f["name"] != "resource_id"]
    (root / "audit_event" / "v2.avsc").write_text(json.dumps(current, indent=2))


def test_the_repositorys_schemas_pass() -> None:
    result = _check(AVRO_DIR)
    assert result.returncode == 0, result.stderr
    assert "all compatible" in result.stdout


def test_adding_a_field_without_default_to_audit_fails_naming_field_and_rule(
    tmp_path: Path,
) -> None:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    _add_audit_version(root, "add-required")
    result = _check(root)
    assert result.returncode == 1
    assert "audit_event" in result.stderr
    assert "severity" in result.stderr
    assert "FULL_TRANSITIVE" in result.stderr


def test_removing_a_field_without_default_from_audit_fails(tmp_path: Path) -> None:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    _add_audit_version(root, "remove-required")
    result = _check(root)
    assert result.returncode == 1
    assert "resource_id" in result.stderr


def test_adding_an_optional_field_passes(tmp_path: Path) -> None:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    _add_audit_version(root, "add-optional")
    result = _check(root)
    assert result.returncode == 0, result.stderr
