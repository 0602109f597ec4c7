"""The compatibility gate: may the current version of each subject be released?

Each subject's rule comes from ``<root>/compatibility.yaml`` (a ``default:`` key, then one key per
subject), with the Confluent Schema Registry names:

=====================  =====================================================================
BACKWARD               the current schema reads data written with the previous version
FORWARD                the previous version reads data written with the current schema
FULL                   both
*_TRANSITIVE           the same, against every earlier version rather than the previous one
NONE                   no check
=====================  =====================================================================

Reading is Avro schema resolution, decided by ``avro.compatibility``'s
`ReaderWriterCompatibilityChecker`; this module only picks the pairs to compare and reports
every problem with its subject, versions, field and rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import avro.errors
import avro.schema
import yaml
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
    check_schema_names,
    lookup_writer_field,
)

from schemas.catalog import AVRO_DIR, version_files
from schemas.errors import SchemaError

__all__ = ["RULES", "Incompatibility", "check_compatibility", "check_version", "load_rules"]

RULES = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
_DEFAULT_RULE = "BACKWARD"  # the Schema Registry's default too
RULES_FILE = "compatibility.yaml"

Direction = Literal["backward", "forward"]


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason why the current version of `subject` breaks its `rule`.

    `direction` says who cannot read whom: "backward" means the new version (`reader_version`)
    cannot read data written with an old one (`writer_version`); "forward" means an old reader
    cannot read data written with the new version. `field` is the top-level field concerned
    (None when the record as a whole is), `location` the path in the reader schema
    (``/fields/3/type``), `kind` the checker's name for the problem
    (``reader_field_missing_default_value``, ``type_mismatch``, ...).
    """

    subject: str
    rule: str
    direction: Direction
    reader_version: int
    writer_version: int
    field: str | None
    location: str
    kind: str
    message: str

    @property
    def new_version(self) -> int:
        return max(self.reader_version, self.writer_version)

    @property
    def old_version(self) -> int:
        return min(self.reader_version, self.writer_version)

    def __str__(self) -> str:
        who = (
            f"v{self.reader_version} cannot read data written with v{self.writer_version}"
            if self.direction == "backward"
            else f"v{self.reader_version} readers cannot read data written with "
            f"v{self.writer_version}"
        )
        where = f"field {self.field!r}" if self.field is not None else "record"
        return (
            f"{self.subject}: v{self.new_version} breaks {self.rule} against "
            f"v{self.old_version} ({self.direction}: {who}): {where}: {self.message} "
            f"[{self.kind} at {self.location}]"
        )


def load_rules(root: Path = AVRO_DIR) -> tuple[str, dict[str, str]]:
    """The default rule and the per-subject rules of ``<root>/compatibility.yaml``.

    Raises `SchemaError` if the file is missing or names an unknown rule.
    """
    path = root / RULES_FILE
    try:
        loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"cannot read compatibility rules from {path}: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise SchemaError(f"{path}: expected a mapping of subject to rule")
    rules: dict[str, str] = {}
    for subject, rule in loaded.items():
        if not isinstance(rule, str) or rule.upper() not in RULES:
            raise SchemaError(
                f"{path}: {subject}: unknown compatibility rule {rule!r}, "
                f"expected one of {', '.join(RULES)}"
            )
        rules[str(subject)] = rule.upper()
    default = rules.pop("default", _DEFAULT_RULE)
    return default, rules


def _parse(path: Path) -> avro.schema.Schema:
    try:
        return avro.schema.parse(path.read_text(encoding="utf-8"))
    except (OSError, avro.errors.AvroException, ValueError) as exc:
        raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc


def _location(path: list[str]) -> str:
    return "/" + "/".join(path)


@dataclass(frozen=True, slots=True)
class _Problem:
    field: str | None
    location: str
    kind: str
    message: str


def _check(
    reader: avro.schema.Schema, writer: avro.schema.Schema, *location: str
) -> SchemaCompatibilityResult:
    """The checker's verdict on reading `writer` data with `reader` (a fresh checker each time:
    it memoizes by schema identity)."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    if not location:
        return checker.get_compatibility(reader, writer)
    *parent, token = location
    return checker.get_compatibility(reader, writer, token, ["/", *parent])


def _problems(reader: avro.schema.Schema, writer: avro.schema.Schema) -> list[_Problem]:
    """Why `reader` cannot read data written with `writer`; empty if it can."""
    verdict = _check(reader, writer)
    if verdict.compatibility is SchemaCompatibilityType.compatible:
        return []
    found: list[_Problem] = []
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(
        writer, avro.schema.RecordSchema
    ):
        # The checker merges every problem of a record into one result whose messages and
        # locations are unordered sets; asking field by field tells which belongs to which.
        name = check_schema_names(reader, writer, ["/"])
        if name.compatibility is SchemaCompatibilityType.incompatible:
            found.append(
                _Problem(
                    None,
                    "/name",
                    SchemaIncompatibilityType.name_mismatch.value,
                    f"record renamed from {writer.fullname} to {reader.fullname} (no alias)",
                )
            )
        for index, reader_field in enumerate(reader.fields):
            writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
            location = ["fields", str(index)]
            if writer_field is None:
                if not reader_field.has_default:
                    found.append(
                        _Problem(
                            reader_field.name,
                            _location(location),
                            SchemaIncompatibilityType.reader_field_missing_default_value.value,
                            "the reader has this field without a default, and the writer's "
                            "data lacks it",
                        )
                    )
                continue
            result = _check(reader_field.type, writer_field.type, *location, "type")
            if result.compatibility is SchemaCompatibilityType.incompatible:
                found.append(
                    _Problem(
                        reader_field.name,
                        ", ".join(sorted(result.locations)),
                        ", ".join(sorted({kind.value for kind in result.incompatibilities})),
                        "; ".join(sorted(result.messages)),
                    )
                )
    if not found:
        # Not a pair of records, or a problem the field-by-field pass does not see: report
        # the checker's verdict as it is.
        found.append(
            _Problem(
                None,
                ", ".join(sorted(verdict.locations)),
                ", ".join(sorted({kind.value for kind in verdict.incompatibilities})),
                "; ".join(sorted(verdict.messages)),
            )
        )
    return found


def _explain(problem: _Problem, direction: Direction, new: int, old: int) -> str:
    writer = old if direction == "backward" else new
    if problem.kind == SchemaIncompatibilityType.missing_enum_symbols.value:
        return (
            f"the reader's enum lacks symbol(s) {problem.message} that data written with "
            f"v{writer} may hold, and has no default symbol"
        )
    if problem.kind != SchemaIncompatibilityType.reader_field_missing_default_value.value:
        return problem.message
    if direction == "backward":
        return (
            f"added in v{new} without a default, so v{new} cannot read v{old} records, which "
            "lack it: give it a default"
        )
    return (
        f"removed in v{new} (or renamed), but v{old} readers need it and it has no default "
        f"in v{old}: keep it, or it must have had a default"
    )


def check_compatibility(root: Path = AVRO_DIR) -> list[Incompatibility]:
    """Compare each subject's current version with its earlier ones under its rule.

    `root` holds ``<subject>/v<N>.avsc`` and ``compatibility.yaml`` (defaults to the schemas of
    this package). Returns every incompatibility found, empty when all subjects pass. Raises
    `SchemaError` for an unreadable or invalid schema or rules file, and for a rule naming a
    subject that has no schema (a typo would otherwise disable its check).
    """
    subjects = version_files(root)
    default, rules = _rules_for(root, subjects)
    found: list[Incompatibility] = []
    for subject, versions in subjects.items():
        found.extend(_check_version(subject, versions, rules.get(subject, default)))
    return found


def check_version(root: Path, subject: str, version: int) -> list[Incompatibility]:
    """Compare `version` of `subject` with the versions before it, under the subject's rule.

    What `check_compatibility` does for the current version, for any version: the release
    command checks each version it is about to release this way. Raises `SchemaError` as
    `check_compatibility` does, and for a version that does not exist.
    """
    subjects = version_files(root)
    default, rules = _rules_for(root, subjects)
    versions = subjects.get(subject, [])
    if version > len(versions) or version < 1:
        raise SchemaError(f"{root / subject}: there is no v{version}.avsc")
    return _check_version(subject, versions[:version], rules.get(subject, default))


def _rules_for(
    root: Path, subjects: dict[str, list[tuple[int, Path]]]
) -> tuple[str, dict[str, str]]:
    default, rules = load_rules(root)
    unknown = sorted(set(rules) - set(subjects))
    if unknown:
        raise SchemaError(
            f"{root / RULES_FILE}: rules for subjects without schemas: {', '.join(unknown)}"
        )
    return default, rules


def _check_version(
    subject: str, versions: list[tuple[int, Path]], rule: str
) -> list[Incompatibility]:
    """Incompatibilities of the last of `versions` with the ones before it under `rule`."""
    if rule == "NONE" or len(versions) < 2:
        return []
    (current_number, current_path), earlier = versions[-1], versions[:-1]
    current = _parse(current_path)
    against = earlier if rule.endswith("_TRANSITIVE") else earlier[-1:]
    directions: list[Direction] = []
    if rule.startswith(("BACKWARD", "FULL")):
        directions.append("backward")
    if rule.startswith(("FORWARD", "FULL")):
        directions.append("forward")
    found: list[Incompatibility] = []
    for old_number, old_path in reversed(against):
        old = _parse(old_path)
        for direction in directions:
            reader, writer = (current, old) if direction == "backward" else (old, current)
            for problem in _problems(reader, writer):
                found.append(
                    Incompatibility(
                        subject=subject,
                        rule=rule,
                        direction=direction,
                        reader_version=current_number if direction == "backward" else old_number,
                        writer_version=old_number if direction == "backward" else current_number,
                        field=problem.field,
                        location=problem.location,
                        kind=problem.kind,
                        message=_explain(problem, direction, current_number, old_number),
                    )
                )
    return found
