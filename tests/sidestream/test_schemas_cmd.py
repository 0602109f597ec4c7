"""The schema gate as CI runs it: the real CLI on a copy of the schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from schemas import AVRO_DIR


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidestream", "schemas", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def _check(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run("check", "--root", str(root), *extra)


def _release(root: Path, *subject: str) -> subprocess.CompletedProcess[str]:
    return _run("release", *subject, "--root", str(root))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    copy = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, copy)
    return copy


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
    elif change == "remove-optional":
        current["fields"] = [f for f in current["fields"] if f["name"] != "ip"]
    (root / "audit_event" / "v2.avsc").write_text(json.dumps(current, indent=2))


def test_the_repositorys_schemas_pass() -> None:
    result = _check(AVRO_DIR)
    assert result.returncode == 0, result.stderr
    assert "all released, compatible and stored by their sinks" in result.stdout


def test_adding_a_field_without_default_to_audit_fails_naming_field_and_rule(root: Path) -> None:
    _add_audit_version(root, "add-required")
    result = _check(root)
    assert result.returncode == 1
    assert "incompatible: audit_event" in result.stderr
    assert "severity" in result.stderr
    assert "FULL_TRANSITIVE" in result.stderr
    # And it cannot be released.
    refused = _release(root, "audit_event")
    assert refused.returncode == 1
    assert "refused:" in refused.stderr
    assert "FULL_TRANSITIVE" in refused.stderr


def test_removing_a_field_without_default_from_audit_fails(root: Path) -> None:
    _add_audit_version(root, "remove-required")
    result = _check(root)
    assert result.returncode == 1
    assert "resource_id" in result.stderr


def test_editing_a_released_version_in_place_fails_naming_both_fingerprints(root: Path) -> None:
    path = root / "audit_event" / "v1.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "severity", "type": ["null", "string"], "default": None})
    path.write_text(json.dumps(schema))
    result = _check(root)
    assert result.returncode == 1
    line = next(line for line in result.stderr.splitlines() if "audit_event v1" in line)
    assert line.startswith("release: audit_event v1: released, but")
    assert line.count("CRC-64-AVRO") == 2
    assert "field 'severity' added" in line
    # The sink does not store the new field either.
    assert "sink contract: sink audit: field 'severity'" in result.stderr


def test_a_doc_only_edit_of_a_released_version_passes(root: Path) -> None:
    path = root / "notification_requested" / "v1.avsc"
    schema = json.loads(path.read_text())
    schema["doc"] = "Reworded for the new handbook."
    path.write_text(json.dumps(schema))
    result = _check(root)
    assert result.returncode == 0, result.stderr


def test_a_compatible_new_version_passes_only_after_release(root: Path) -> None:
    # Dropping an optional field keeps FULL_TRANSITIVE and every field stays declared.
    _add_audit_version(root, "remove-optional")
    result = _check(root)
    assert result.returncode == 1
    assert "release: audit_event v2:" in result.stderr
    assert "is not released" in result.stderr
    assert "sidestream schemas release audit_event" in result.stderr

    released = _release(root, "audit_event")
    assert released.returncode == 0, released.stderr
    assert "released audit_event v2 (CRC-64-AVRO" in released.stdout
    assert _check(root).returncode == 0
    assert "nothing to release" in _release(root).stdout


def test_a_new_field_its_sink_does_not_map_fails_even_when_released(root: Path) -> None:
    _add_audit_version(root, "add-optional")
    assert _release(root, "audit_event").returncode == 0
    result = _check(root)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "sink contract: sink audit: field 'severity' of audit_event v2" in result.stderr
    assert "consumers/sinks/contracts.py" in result.stderr


def test_check_registry_reports_what_an_empty_registry_misses(root: Path) -> None:
    env = {"SIDESTREAM_SCHEMA_REGISTRY_URL": f"mock://{uuid.uuid4().hex}"}
    result = _run("check", "--root", str(root), "--registry", env=env)
    assert result.returncode == 1
    assert "registry (missing): audit_event v1 (CRC-64-AVRO" in result.stderr
    assert "registry (missing): analytics_event v2" in result.stderr
    # --register fills the (per-process) mock registry, which then agrees.
    registered = _run("check", "--root", str(root), "--registry", "--register", env=env)
    assert registered.returncode == 0, registered.stderr
    assert "registered v1 under sidestream.audit-value" in registered.stdout
    assert "every released version registered" in registered.stdout


def test_check_registry_without_a_url_says_which_setting(root: Path) -> None:
    result = _run(
        "check", "--root", str(root), "--registry", env={"SIDESTREAM_SCHEMA_REGISTRY_URL": ""}
    )
    assert result.returncode == 1
    assert "SIDESTREAM_SCHEMA_REGISTRY_URL" in result.stderr
