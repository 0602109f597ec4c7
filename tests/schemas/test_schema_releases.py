"""Released versions are pinned: the gate on copies of the repository's schema tree."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas import AVRO_DIR, SchemaError, default_catalog
from schemas.releases import (
    RELEASES_FILE,
    ReleaseRefusedError,
    check_releases,
    load_releases,
    release,
)

Schema = dict[str, Any]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the repository's schemas, release record included."""
    copy = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, copy)
    return copy


def _edit(root: Path, subject: str, version: int, change: Callable[[Schema], None]) -> None:
    path = root / subject / f"v{version}.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema, indent=2))


def _field(schema: Schema, name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


def _new_version(root: Path, subject: str, change: Callable[[Schema], None]) -> int:
    versions = sorted(int(p.stem[1:]) for p in (root / subject).glob("v*.avsc"))
    schema = json.loads((root / subject / f"v{versions[-1]}.avsc").read_text())
    change(schema)
    number = versions[-1] + 1
    (root / subject / f"v{number}.avsc").write_text(json.dumps(schema, indent=2))
    return number


def test_the_repositorys_schemas_are_all_released_and_unchanged() -> None:
    assert check_releases(AVRO_DIR) == []
    releases = load_releases(AVRO_DIR)
    assert releases is not None
    catalog = default_catalog()
    # The pinned CRC-64-AVRO is the very fingerprint single-object encoding puts on the wire.
    for subject in catalog.subjects:
        for version in catalog.versions(subject):
            assert releases[(subject, version.version)].crc64_avro == version.fingerprint.hex()


def _assert_names_both_fingerprints(message: str, subject: str, version: int) -> None:
    assert f"{subject} v{version}" in message
    assert message.count("CRC-64-AVRO") == 2
    assert message.count("SHA-256") == 2


def test_a_field_added_in_place_fails_naming_subject_version_and_both_fingerprints(
    root: Path,
) -> None:
    before = load_releases(root)
    assert before is not None
    _edit(
        root,
        "audit_event",
        1,
        lambda s: s["fields"].append({"name": "severity", "type": ["null", "string"]}),
    )
    [problem] = check_releases(root)
    assert problem.kind == "changed"
    _assert_names_both_fingerprints(problem.message, "audit_event", 1)
    assert before[("audit_event", 1)].crc64_avro in problem.message
    assert "field 'severity' added" in problem.message
    assert "sidestream schemas release audit_event" in problem.message


def test_a_type_changed_in_place_fails(root: Path) -> None:
    _edit(root, "audit_event", 1, lambda s: _field(s, "resource_id").update(type="bytes"))
    [problem] = check_releases(root)
    _assert_names_both_fingerprints(problem.message, "audit_event", 1)
    assert "field 'resource_id' type changed" in problem.message


def test_a_field_renamed_in_place_fails(root: Path) -> None:
    _edit(root, "analytics_event", 2, lambda s: _field(s, "platform").update(name="client"))
    [problem] = check_releases(root)
    _assert_names_both_fingerprints(problem.message, "analytics_event", 2)
    assert "field 'platform' renamed to 'client'" in problem.message


def test_a_doc_only_edit_passes(root: Path) -> None:
    def document(schema: Schema) -> None:
        schema["doc"] = "Reworded."
        _field(schema, "actor_id")["doc"] = "Who did it, reworded."

    _edit(root, "audit_event", 1, document)
    assert check_releases(root) == []


def test_respelling_a_released_version_without_changing_its_meaning_passes(root: Path) -> None:
    def respell(schema: Schema) -> None:
        _field(schema, "outcome")["type"]["namespace"] = schema["namespace"]
        _field(schema, "tenant_id")["type"] = {"type": "string"}
        schema["name"] = f"{schema.pop('namespace')}.{schema['name']}"

    _edit(root, "audit_event", 1, respell)
    assert check_releases(root) == []


def test_a_default_changed_in_place_fails(root: Path) -> None:
    _edit(root, "analytics_event", 2, lambda s: _field(s, "platform").update(default="web"))
    [problem] = check_releases(root)
    assert "analytics_event v2" in problem.message
    assert "field 'platform' changed (default, alias or order)" in problem.message


def test_a_logical_type_changed_in_place_fails_though_the_canonical_form_is_the_same(
    root: Path,
) -> None:
    # timestamp-micros -> timestamp-millis keeps the bytes and the wire fingerprint, and reads
    # every timestamp a thousand times off.
    _edit(
        root,
        "audit_event",
        1,
        lambda s: _field(s, "occurred_at")["type"].update(logicalType="timestamp-millis"),
    )
    [problem] = check_releases(root)
    assert "canonical form is unchanged" in problem.message
    assert "occurred_at" in problem.message


def test_a_released_version_that_disappears_fails(root: Path) -> None:
    (root / "analytics_event" / "v1.avsc").unlink()
    [problem] = check_releases(root)
    assert problem.kind == "missing"
    assert "analytics_event v1" in problem.message
    assert "restore it" in problem.message


def test_a_new_compatible_version_passes_only_after_it_is_released(root: Path) -> None:
    number = _new_version(
        root,
        "audit_event",
        lambda s: s["fields"].append(
            {"name": "severity", "type": ["null", "string"], "default": None}
        ),
    )
    [problem] = check_releases(root)
    assert problem.kind == "unreleased"
    assert f"audit_event v{number}" in problem.message
    assert "sidestream schemas release audit_event" in problem.message

    [entry] = release(root, "audit_event")
    assert (entry.subject, entry.version) == ("audit_event", number)
    assert check_releases(root) == []
    assert release(root) == []  # nothing left to release


def test_release_refuses_a_breaking_version_and_writes_nothing(root: Path) -> None:
    record = (root / RELEASES_FILE).read_text()
    _new_version(
        root, "audit_event", lambda s: s["fields"].append({"name": "severity", "type": "string"})
    )
    with pytest.raises(ReleaseRefusedError, match=r"FULL_TRANSITIVE.*severity"):
        release(root)
    assert (root / RELEASES_FILE).read_text() == record


def test_release_refuses_while_a_released_version_differs(root: Path) -> None:
    _edit(root, "audit_event", 1, lambda s: _field(s, "resource_id").update(type="bytes"))
    _new_version(root, "audit_event", lambda s: None)
    with pytest.raises(ReleaseRefusedError, match=r"audit_event v1: released, but"):
        release(root, "audit_event")


def test_release_of_an_unknown_subject_is_refused(root: Path) -> None:
    with pytest.raises(ReleaseRefusedError, match="unknown subject 'audit'"):
        release(root, "audit")


def test_a_version_the_code_publishes_must_be_released(root: Path) -> None:
    problems = check_releases(root, published={"audit_event": 2})
    assert [p.kind for p in problems] == ["unreleased_in_code"]
    assert "audit_event v2" in problems[0].message


def test_without_a_record_the_gate_fails_and_release_creates_it(root: Path) -> None:
    (root / RELEASES_FILE).unlink()
    [problem] = check_releases(root)
    assert problem.kind == "record"
    assert "sidestream schemas release" in problem.message
    released = release(root)
    assert len(released) == sum(
        len(default_catalog().versions(s)) for s in default_catalog().subjects
    )
    assert check_releases(root) == []


def test_a_hand_edited_fingerprint_is_caught(root: Path) -> None:
    path = root / RELEASES_FILE
    document = yaml.safe_load(path.read_text())
    document["audit_event"][1]["crc64_avro"] = "0" * 16
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(SchemaError, match="edited by hand"):
        check_releases(root)
