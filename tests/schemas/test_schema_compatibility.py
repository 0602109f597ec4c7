"""The compatibility gate, on the Avro specification's schema-resolution cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from schemas import AVRO_DIR, Incompatibility, SchemaError, check_compatibility

Schema = dict[str, Any]


def _record(*fields: dict[str, Any], name: str = "Thing") -> Schema:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields)}


def _field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def _write(root: Path, rule: str, *versions: Schema, subject: str = "thing") -> Path:
    """A schema tree with one subject holding `versions` (v1, v2, ...) under `rule`."""
    directory = root / subject
    directory.mkdir(parents=True, exist_ok=True)
    for number, schema in enumerate(versions, start=1):
        (directory / f"v{number}.avsc").write_text(json.dumps(schema))
    (root / "compatibility.yaml").write_text(f"default: NONE\n{subject}: {rule}\n")
    return root


def _check(tmp_path: Path, rule: str, old: Schema, new: Schema) -> list[Incompatibility]:
    return check_compatibility(_write(tmp_path, rule, old, new))


ID = _field("id", "string")
ENUM_ABC = {"type": "enum", "name": "Letter", "symbols": ["A", "B", "C"]}
ENUM_AB = {"type": "enum", "name": "Letter", "symbols": ["A", "B"]}
ENUM_AB_DEFAULT = {**ENUM_AB, "default": "A"}

# (old schema, new schema, rule, compatible?) following the "Schema Resolution" section of the
# Avro specification; BACKWARD = the new schema reads old data, FORWARD = the old one reads new.
CASES = [
    pytest.param(
        _record(_field("n", "int")),
        _record(_field("n", "long")),
        "BACKWARD",
        True,
        id="int to long (promotion)",
    ),
    pytest.param(
        _record(_field("n", "int")),
        _record(_field("n", "long")),
        "FORWARD",
        False,
        id="int to long, old reader",
    ),
    pytest.param(
        _record(_field("n", "long")),
        _record(_field("n", "int")),
        "BACKWARD",
        False,
        id="long to int",
    ),
    pytest.param(
        _record(_field("n", "int")),
        _record(_field("n", "double")),
        "BACKWARD",
        True,
        id="int to double",
    ),
    pytest.param(
        _record(_field("n", "float")),
        _record(_field("n", "double")),
        "FULL",
        False,
        id="float to double",
    ),
    pytest.param(
        _record(_field("s", "string")),
        _record(_field("s", "bytes")),
        "FULL",
        True,
        id="string to bytes",
    ),
    pytest.param(
        _record(_field("s", "string")),
        _record(_field("s", "int")),
        "BACKWARD",
        False,
        id="string to int",
    ),
    pytest.param(
        _record(ID),
        _record(ID, _field("x", "int")),
        "BACKWARD",
        False,
        id="add field without default",
    ),
    pytest.param(
        _record(ID),
        _record(ID, _field("x", "int")),
        "FORWARD",
        True,
        id="add field without default, old reader",
    ),
    pytest.param(
        _record(ID),
        _record(ID, _field("x", "int", default=0)),
        "FULL",
        True,
        id="add field with default",
    ),
    pytest.param(
        _record(ID, _field("x", "int")),
        _record(ID),
        "FORWARD",
        False,
        id="remove field without default",
    ),
    pytest.param(
        _record(ID, _field("x", "int")),
        _record(ID),
        "BACKWARD",
        True,
        id="remove field without default, new reader",
    ),
    pytest.param(
        _record(ID, _field("x", "int", default=0)),
        _record(ID),
        "FULL",
        True,
        id="remove field with default",
    ),
    pytest.param(
        _record(_field("e", ENUM_AB)),
        _record(_field("e", ENUM_ABC)),
        "BACKWARD",
        True,
        id="enum symbol added",
    ),
    pytest.param(
        _record(_field("e", ENUM_AB)),
        _record(_field("e", ENUM_ABC)),
        "FORWARD",
        False,
        id="enum symbol added, old reader",
    ),
    pytest.param(
        _record(_field("e", ENUM_AB_DEFAULT)),
        _record(_field("e", ENUM_ABC)),
        "FULL",
        True,
        id="enum symbol added, old reader has a default",
    ),
    pytest.param(
        _record(_field("e", ENUM_ABC)),
        _record(_field("e", ENUM_AB)),
        "BACKWARD",
        False,
        id="enum symbol removed",
    ),
    pytest.param(
        _record(_field("u", ["null", "string"])),
        _record(_field("u", ["null", "string", "int"])),
        "BACKWARD",
        True,
        id="union branch added",
    ),
    pytest.param(
        _record(_field("u", ["null", "string"])),
        _record(_field("u", ["null", "string", "int"])),
        "FORWARD",
        False,
        id="union branch added, old reader",
    ),
    pytest.param(
        _record(_field("u", ["null", "string", "int"])),
        _record(_field("u", ["null", "string"])),
        "BACKWARD",
        False,
        id="union branch removed",
    ),
    pytest.param(
        _record(_field("u", "string")),
        _record(_field("u", ["null", "string"], default=None)),
        "BACKWARD",
        True,
        id="made nullable",
    ),
    pytest.param(
        _record(_field("u", "string")),
        _record(_field("u", ["null", "string"], default=None)),
        "FORWARD",
        False,
        id="made nullable, old reader",
    ),
    pytest.param(_record(ID), _record(ID, name="Other"), "BACKWARD", False, id="record renamed"),
    pytest.param(
        _record(ID),
        {**_record(ID, name="Other"), "aliases": ["test.Thing"]},
        "BACKWARD",
        True,
        id="record renamed with alias",
    ),
    pytest.param(
        _record(_field("a", "int")),
        _record(_field("b", "int", aliases=["a"])),
        "BACKWARD",
        True,
        id="field renamed with alias",
    ),
    pytest.param(
        _record(_field("m", {"type": "map", "values": "int"})),
        _record(_field("m", {"type": "map", "values": "long"})),
        "BACKWARD",
        True,
        id="map values promoted",
    ),
    pytest.param(
        _record(_field("a", {"type": "array", "items": "long"})),
        _record(_field("a", {"type": "array", "items": "int"})),
        "BACKWARD",
        False,
        id="array items narrowed",
    ),
    pytest.param(
        _record(_field("n", "long")),
        _record(_field("n", "string")),
        "NONE",
        True,
        id="anything goes under NONE",
    ),
]


@pytest.mark.parametrize(("old", "new", "rule", "compatible"), CASES)
def test_resolution_rules(
    tmp_path: Path, old: Schema, new: Schema, rule: str, compatible: bool
) -> None:
    found = _check(tmp_path, rule, old, new)
    assert (found == []) is compatible, [str(i) for i in found]
    for incompatibility in found:
        assert incompatibility.subject == "thing"
        assert incompatibility.rule == rule
        assert {incompatibility.reader_version, incompatibility.writer_version} == {1, 2}


def test_a_field_added_without_default_names_the_field(tmp_path: Path) -> None:
    found = _check(tmp_path, "BACKWARD", _record(ID), _record(ID, _field("shoe_size", "int")))

    assert len(found) == 1
    (problem,) = found
    assert problem.field == "shoe_size"
    assert problem.direction == "backward"
    assert (problem.reader_version, problem.writer_version) == (2, 1)
    assert problem.kind == "reader_field_missing_default_value"
    assert "shoe_size" in str(problem)
    assert "BACKWARD" in str(problem)
    assert "default" in str(problem)


def test_a_type_change_names_field_and_location(tmp_path: Path) -> None:
    found = _check(
        tmp_path, "BACKWARD", _record(ID, _field("n", "long")), _record(ID, _field("n", "int"))
    )
    assert [(i.field, i.location, i.kind) for i in found] == [
        ("n", "/fields/1/type", "type_mismatch")
    ]


def test_every_problem_is_reported_with_its_own_field(tmp_path: Path) -> None:
    old = _record(ID, _field("n", "long"), _field("e", ENUM_ABC))
    new = _record(ID, _field("n", "int"), _field("e", ENUM_AB), _field("x", "int"))
    found = _check(tmp_path, "BACKWARD", old, new)
    assert sorted((i.field, i.kind) for i in found) == [
        ("e", "missing_enum_symbols"),
        ("n", "type_mismatch"),
        ("x", "reader_field_missing_default_value"),
    ]
    assert "'C'" in str(next(i for i in found if i.field == "e"))


def test_full_reports_both_directions(tmp_path: Path) -> None:
    old = _record(ID, _field("gone", "int"))
    new = _record(ID, _field("added", "int"))
    found = _check(tmp_path, "FULL", old, new)
    assert sorted((i.direction, i.field) for i in found) == [
        ("backward", "added"),
        ("forward", "gone"),
    ]
    forward = next(i for i in found if i.direction == "forward")
    assert (forward.reader_version, forward.writer_version) == (1, 2)
    assert "removed" in str(forward)


def _three_versions() -> tuple[Schema, Schema, Schema]:
    """v3 reads v2 data, but not v1 data: `b` lost its default after v1 lacked it."""
    v1 = _record(ID)
    v2 = _record(ID, _field("b", "string", default="x"))
    v3 = _record(ID, _field("b", "string"))
    return v1, v2, v3


def test_non_transitive_rules_compare_with_the_previous_version_only(tmp_path: Path) -> None:
    assert check_compatibility(_write(tmp_path, "BACKWARD", *_three_versions())) == []


def test_transitive_rules_compare_with_every_earlier_version(tmp_path: Path) -> None:
    found = check_compatibility(_write(tmp_path, "BACKWARD_TRANSITIVE", *_three_versions()))
    assert [(i.field, i.reader_version, i.writer_version) for i in found] == [("b", 3, 1)]
    assert "BACKWARD_TRANSITIVE" in str(found[0])


def test_the_repository_schemas_pass() -> None:
    assert check_compatibility() == []
    assert check_compatibility(AVRO_DIR) == []


def _repo_copy(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    return root


def _audit_v2(root: Path, new_field: dict[str, Any]) -> None:
    schema = json.loads((root / "audit_event" / "v1.avsc").read_text())
    schema["fields"].append(new_field)
    (root / "audit_event" / "v2.avsc").write_text(json.dumps(schema, indent=2))


def test_audit_event_field_without_default_breaks_full_transitive(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path)
    _audit_v2(root, {"name": "session_id", "type": "string", "doc": "Login session."})

    found = check_compatibility(root)

    assert [(i.subject, i.rule, i.field, i.direction) for i in found] == [
        ("audit_event", "FULL_TRANSITIVE", "session_id", "backward")
    ]
    message = str(found[0])
    assert "session_id" in message
    assert "FULL_TRANSITIVE" in message
    assert "audit_event" in message


def test_audit_event_field_with_default_passes(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path)
    _audit_v2(
        root,
        {"name": "session_id", "type": ["null", "string"], "default": None, "doc": "Session."},
    )
    assert check_compatibility(root) == []


def test_analytics_event_may_drop_a_field_under_backward_transitive(tmp_path: Path) -> None:
    root = _repo_copy(tmp_path)
    v2 = json.loads((root / "analytics_event" / "v2.avsc").read_text())
    v2["fields"] = [f for f in v2["fields"] if f["name"] != "session_id"]
    (root / "analytics_event" / "v3.avsc").write_text(json.dumps(v2))
    assert check_compatibility(root) == []

    (root / "compatibility.yaml").write_text("default: FULL_TRANSITIVE\n")
    assert check_compatibility(root) == []  # session_id had a default: old readers still fine

    v2["fields"] = [f for f in v2["fields"] if f["name"] != "name"]
    (root / "analytics_event" / "v3.avsc").write_text(json.dumps(v2))
    found = check_compatibility(root)
    assert {(i.field, i.direction, i.reader_version) for i in found} == {
        ("name", "forward", 1),
        ("name", "forward", 2),
    }


# --- refusing broken inputs --------------------------------------------------------------------


def test_an_unknown_rule_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "SIDEWAYS", _record(ID))
    with pytest.raises(SchemaError, match="SIDEWAYS"):
        check_compatibility(root)


def test_a_rule_for_a_missing_subject_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "BACKWARD", _record(ID))
    (root / "compatibility.yaml").write_text("default: BACKWARD\nthign: FULL\n")
    with pytest.raises(SchemaError, match="thign"):
        check_compatibility(root)


def test_a_missing_rules_file_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "BACKWARD", _record(ID))
    (root / "compatibility.yaml").unlink()
    with pytest.raises(SchemaError, match=r"compatibility\.yaml"):
        check_compatibility(root)


def test_subjects_without_a_rule_get_the_default(tmp_path: Path) -> None:
    root = _write(tmp_path, "NONE", _record(ID), _record(ID, _field("x", "int")))
    assert check_compatibility(root) == []
    (root / "compatibility.yaml").write_text("default: BACKWARD\n")
    assert [i.rule for i in check_compatibility(root)] == ["BACKWARD"]


def test_a_gap_in_versions_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "BACKWARD", _record(ID))
    (root / "thing" / "v3.avsc").write_text(json.dumps(_record(ID)))
    with pytest.raises(SchemaError, match="without gaps"):
        check_compatibility(root)


def test_a_misnamed_schema_file_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "BACKWARD", _record(ID))
    (root / "thing" / "v2-draft.avsc").write_text(json.dumps(_record(ID)))
    with pytest.raises(SchemaError, match=r"v<N>\.avsc"):
        check_compatibility(root)


def test_an_invalid_schema_is_refused(tmp_path: Path) -> None:
    root = _write(tmp_path, "BACKWARD", _record(ID), _record(_field("n", "integer")))
    with pytest.raises(SchemaError, match=r"v2\.avsc"):
        check_compatibility(root)
