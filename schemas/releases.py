"""Released schema versions, pinned: what may be on the wire, and the gate that keeps it so.

A version is *released* once ``sidestream schemas release`` has recorded it in
``<root>/released.yaml``. From then on records written with it may exist anywhere (topics,
outbox rows, dead letters), and readers find its schema by fingerprint, so its wire identity
must never change. Each entry pins:

``crc64_avro``
    The CRC-64-AVRO (Rabin) fingerprint of the schema's Parsing Canonical Form, as the hex of
    the 8 bytes that follow ``C3 01`` in Avro single-object encoding (little-endian) — the very
    bytes a reader looks the writer schema up by.
``sha256``
    SHA-256 of the Parsing Canonical Form (UTF-8): the same identity without 64-bit collisions.
``definition_sha256`` and ``definition``
    The schema without its ``doc`` attributes (compact JSON, sorted keys) and its SHA-256. The
    canonical form drops defaults, aliases and logical types, which do not change the bytes but
    do change what they mean (``timestamp-millis`` to ``timestamp-micros``, a reader's default):
    those are pinned too. Only documentation may change in a released version.

`check_releases` is the gate; `release` writes new entries. Neither looks at a registry: see
``sidestream schemas check --registry`` for that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from fastavro.schema import to_parsing_canonical_form

from schemas.catalog import AVRO_DIR, _canonical_fingerprint, _load_version
from schemas.compatibility import check_version
from schemas.errors import SchemaError
from schemas.events import EVENT_TYPES

__all__ = [
    "RELEASES_FILE",
    "Release",
    "ReleaseProblem",
    "ReleaseRefusedError",
    "check_releases",
    "load_releases",
    "release",
    "release_of",
]

RELEASES_FILE = "released.yaml"

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")

_HEADER = """\
# Released schema versions: what may be on the wire. Written by `sidestream schemas release`;
# checked by `make schemas-check`. Do not edit by hand: a released version never changes
# (except its docs) and never goes away; a change is a new vN.avsc, released in turn.
#   crc64_avro         CRC-64-AVRO of the Parsing Canonical Form: the 8 bytes after C3 01 in
#                      single-object encoding (little-endian hex), how readers find the schema
#   sha256             SHA-256 of the Parsing Canonical Form
#   definition_sha256  SHA-256 of `definition`: the schema without docs (defaults, aliases and
#                      logical types kept, which the canonical form drops)
"""

ProblemKind = Literal["changed", "missing", "unreleased", "unreleased_in_code", "record"]


@dataclass(frozen=True, slots=True)
class Release:
    """One released version of one subject, as pinned in ``released.yaml``."""

    subject: str
    version: int
    crc64_avro: str
    sha256: str
    definition_sha256: str
    definition: str

    @property
    def fingerprints(self) -> str:
        """Both fingerprints of the canonical form, for messages."""
        return f"CRC-64-AVRO {self.crc64_avro}, SHA-256 {self.sha256[:16]}…"


@dataclass(frozen=True, slots=True)
class ReleaseProblem:
    """Why the schemas on disk (or in the code) disagree with the release record.

    `kind`: ``changed`` (a released version's canonical form or definition changed),
    ``missing`` (a released version's file is gone), ``unreleased`` (a schema file that is not
    released), ``unreleased_in_code`` (an event class publishes a version that is not released),
    ``record`` (the release record itself is missing or inconsistent).
    """

    kind: ProblemKind
    subject: str
    version: int | None
    message: str

    def __str__(self) -> str:
        return self.message


class ReleaseRefusedError(SchemaError):
    """`release` would not release: the message says which version and why."""


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _normalized(schema: Any, namespace: str | None) -> Any:
    """`schema` as it resolves, minus its docs: named types under their full names (no separate
    ``namespace``), ``{"type": "string"}`` as ``"string"``; defaults, aliases, order and logical
    types kept as written. Two spellings of one schema normalize alike, so only a change of
    meaning changes the definition."""
    if isinstance(schema, list):
        return [_normalized(branch, namespace) for branch in schema]
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else _full_name(schema, namespace)
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if isinstance(kind, str) and kind in _PRIMITIVES and set(schema) <= {"type", "doc"}:
        return kind
    out: dict[str, Any] = {}
    if kind in _NAMED and "name" in schema:
        full = _full_name(str(schema["name"]), schema.get("namespace", namespace))
        out["name"] = full
        namespace = full.rpartition(".")[0] or None
    for key, value in schema.items():
        if key in ("doc", "namespace", "name"):
            continue
        if key == "fields" and isinstance(value, list):
            out[key] = [
                {
                    k: (_normalized(v, namespace) if k == "type" else v)
                    for k, v in field.items()
                    if k != "doc"
                }
                for field in value
            ]
        elif key in ("items", "values") or (key == "type" and not isinstance(value, str)):
            out[key] = _normalized(value, namespace)
        else:
            # Defaults stay as written: a default map may hold a key named "doc".
            out[key] = value
    return out


def _definition(schema: Mapping[str, Any]) -> str:
    return json.dumps(_normalized(dict(schema), None), sort_keys=True, separators=(",", ":"))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _release_from_definition(subject: str, version: int, definition: str) -> Release:
    canonical = to_parsing_canonical_form(json.loads(definition))
    return Release(
        subject=subject,
        version=version,
        crc64_avro=_canonical_fingerprint(canonical).hex(),
        sha256=_sha256(canonical),
        definition_sha256=_sha256(definition),
        definition=definition,
    )


def release_of(subject: str, version: int, schema: Mapping[str, Any]) -> Release:
    """The release entry `schema` would get as `version` of `subject`."""
    return _release_from_definition(subject, version, _definition(schema))


def load_releases(root: Path = AVRO_DIR) -> dict[tuple[str, int], Release] | None:
    """The entries of ``<root>/released.yaml`` by (subject, version); None if there is no file.

    Raises `SchemaError` for a malformed file, or an entry whose fingerprints do not match its
    own definition (a hand edit).
    """
    path = root / RELEASES_FILE
    if not path.exists():
        return None
    try:
        loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"cannot read the release record {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SchemaError(f"{path}: expected a mapping of subject to versions")
    found: dict[tuple[str, int], Release] = {}
    for subject, versions in loaded.items():
        if not isinstance(versions, dict):
            raise SchemaError(f"{path}: {subject}: expected a mapping of version to entry")
        for version, entry in versions.items():
            where = f"{path}: {subject} v{version}"
            if not isinstance(version, int) or not isinstance(entry, dict):
                raise SchemaError(f"{where}: expected `<N>: {{crc64_avro: ..., ...}}`")
            try:
                definition = str(entry["definition"])
                recorded = Release(
                    subject=str(subject),
                    version=version,
                    crc64_avro=str(entry["crc64_avro"]),
                    sha256=str(entry["sha256"]),
                    definition_sha256=str(entry["definition_sha256"]),
                    definition=definition,
                )
                computed = _release_from_definition(str(subject), version, definition)
            except (KeyError, ValueError) as exc:
                raise SchemaError(f"{where}: malformed entry ({exc})") from exc
            if computed != recorded:
                raise SchemaError(
                    f"{where}: the recorded fingerprints do not match the recorded definition "
                    "(edited by hand?): restore the file from git and use `sidestream schemas "
                    "release`"
                )
            found[(str(subject), version)] = recorded
    return found


def _write_releases(root: Path, releases: Mapping[tuple[str, int], Release]) -> None:
    document: dict[str, dict[int, dict[str, str]]] = {}
    for subject, version in sorted(releases):
        entry = releases[(subject, version)]
        document.setdefault(subject, {})[version] = {
            "crc64_avro": entry.crc64_avro,
            "sha256": entry.sha256,
            "definition_sha256": entry.definition_sha256,
            "definition": entry.definition,
        }
    text = _HEADER + yaml.safe_dump(document, sort_keys=False, width=1 << 20)
    path = root / RELEASES_FILE
    # Written aside and renamed: an interrupted release leaves the old record whole.
    fd, temporary = tempfile.mkstemp(dir=root, prefix=".released-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would follow the file into the tree
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _schema_files(root: Path) -> dict[tuple[str, int], Path]:
    """Every ``<root>/<subject>/v<N>.avsc`` — gaps allowed: a missing released version is
    reported as such here, not as a gap."""
    if not root.is_dir():
        raise SchemaError(f"schema directory {root} does not exist")
    found: dict[tuple[str, int], Path] = {}
    for path in sorted(root.glob("*/*.avsc")):
        match = _VERSION_FILE.fullmatch(path.name)
        if match is not None:
            found[(path.parent.name, int(match.group(1)))] = path
    return found


def _fields(definition: str) -> dict[str, str]:
    schema = json.loads(definition)
    return {
        str(f["name"]): json.dumps(f.get("type"), sort_keys=True) for f in schema.get("fields", [])
    }


def _what_changed(released: Release, now: Release) -> str:
    """The top-level differences between two definitions, in words."""
    old, new = json.loads(released.definition), json.loads(now.definition)
    old_fields, new_fields = _fields(released.definition), _fields(now.definition)
    changes: list[str] = []
    if old.get("name") != new.get("name"):  # full names: the namespace is part of them
        changes.append(f"record renamed from {old.get('name')} to {new.get('name')}")
    removed = [name for name in old_fields if name not in new_fields]
    added = [name for name in new_fields if name not in old_fields]
    if len(removed) == 1 and len(added) == 1 and old_fields[removed[0]] == new_fields[added[0]]:
        changes.append(f"field {removed[0]!r} renamed to {added[0]!r}")
    else:
        changes.extend(f"field {name!r} removed" for name in removed)
        changes.extend(f"field {name!r} added" for name in added)
    for name, type_ in new_fields.items():
        if name in old_fields and old_fields[name] != type_:
            changes.append(f"field {name!r} type changed from {old_fields[name]} to {type_}")
    if not changes:
        old_by_name = {f["name"]: f for f in old.get("fields", [])}
        for field in new.get("fields", []):
            if old_by_name.get(field["name"]) != field:
                changes.append(f"field {field['name']!r} changed (default, alias or order)")
    if not changes and [*old_fields] != [*new_fields]:
        changes.append("fields reordered")
    return "; ".join(changes) or "record attributes changed"


def _changed_message(released: Release, now: Release, path: Path) -> str:
    subject, version = released.subject, released.version
    if released.crc64_avro != now.crc64_avro or released.sha256 != now.sha256:
        what = (
            f"its canonical form changed (released {released.fingerprints}; now {now.fingerprints})"
        )
        why = "records already written with it would no longer be found or decoded"
    else:
        what = (
            f"its canonical form is unchanged ({now.fingerprints}) but defaults, aliases or "
            f"logical types changed (definition SHA-256 released {released.definition_sha256[:16]}"
            f"…, now {now.definition_sha256[:16]}…)"
        )
        why = "records already written with it would be read differently"
    return (
        f"{subject} v{version}: released, but {path} changed: {what}: "
        f"{_what_changed(released, now)}. {why.capitalize()}: undo the change (only docs may "
        f"change), put it in a new version instead, then `sidestream schemas release {subject}`"
    )


def _published() -> dict[str, int]:
    """What the code publishes: each event class's subject and ``SCHEMA_VERSION``."""
    return {cls.SUBJECT: cls.SCHEMA_VERSION for cls in EVENT_TYPES.values()}


def check_releases(
    root: Path = AVRO_DIR, *, published: Mapping[str, int] | None = None
) -> list[ReleaseProblem]:
    """Compare the schema files under `root` with its release record.

    Reports every released version whose file is gone or whose canonical form or definition
    changed (naming subject, version and both fingerprints), every schema file that is not
    released, and every ``subject: version`` of `published` (default: what the event classes
    publish, ``EVENT_TYPES``) that is not released. Empty when all agree. Raises `SchemaError`
    for an unreadable schema or release record.
    """
    releases = load_releases(root)
    if releases is None:
        return [
            ReleaseProblem(
                "record",
                "",
                None,
                f"no release record at {root / RELEASES_FILE}: pin the versions that are on the "
                "wire with `sidestream schemas release`",
            )
        ]
    files = _schema_files(root)
    problems: list[ReleaseProblem] = []
    for (subject, version), released in sorted(releases.items()):
        path = files.get((subject, version))
        if path is None:
            problems.append(
                ReleaseProblem(
                    "missing",
                    subject,
                    version,
                    f"{subject} v{version}: released ({released.fingerprints}) but "
                    f"{root / subject / f'v{version}.avsc'} is gone: restore it from git; "
                    "records written with it may still be read, so a released version stays",
                )
            )
            continue
        now = release_of(subject, version, _load_version(subject, version, path).schema)
        if now != released:
            problems.append(
                ReleaseProblem("changed", subject, version, _changed_message(released, now, path))
            )
    for (subject, version), path in sorted(files.items()):
        if (subject, version) not in releases:
            now = release_of(subject, version, _load_version(subject, version, path).schema)
            problems.append(
                ReleaseProblem(
                    "unreleased",
                    subject,
                    version,
                    f"{subject} v{version}: {path} is not released ({now.fingerprints}): "
                    f"release it with `sidestream schemas release {subject}` once it is final, "
                    "or remove the file",
                )
            )
    for subject, version in sorted((_published() if published is None else published).items()):
        if (subject, version) not in releases:
            problems.append(
                ReleaseProblem(
                    "unreleased_in_code",
                    subject,
                    version,
                    f"{subject} v{version}: the code publishes it (the event class's "
                    "SCHEMA_VERSION) but it is not released: "
                    f"`sidestream schemas release {subject}`, or keep the class on a released "
                    "version",
                )
            )
    return problems


def release(root: Path = AVRO_DIR, subject: str | None = None) -> list[Release]:
    """Release every unreleased version under `root` (of `subject` only, if given), oldest first.

    Returns the new entries (empty when there was nothing to release) after writing them to
    ``<root>/released.yaml``; creates the record if there is none. Raises `ReleaseRefusedError`
    — and writes nothing — when a released version is missing or changed, or when a version to
    release breaks its subject's compatibility rule against the versions before it.
    """
    releases = load_releases(root) or {}
    files = _schema_files(root)
    if subject is not None and not any(s == subject for s, _ in files):
        known = ", ".join(sorted({s for s, _ in files}))
        raise ReleaseRefusedError(f"unknown subject {subject!r}: the subjects are {known}")
    blocking = [
        problem
        for problem in check_releases(root, published={})
        if problem.kind in ("changed", "missing")
        and (subject is None or problem.subject == subject)
    ]
    if blocking:
        raise ReleaseRefusedError(f"{blocking[0]} (refusing to release)")
    new: dict[tuple[str, int], Release] = {}
    for (name, version), path in sorted(files.items()):
        if (name, version) in releases or (subject is not None and name != subject):
            continue
        breaks = check_version(root, name, version)
        if breaks:
            raise ReleaseRefusedError(f"{breaks[0]} (refusing to release {name} v{version})")
        new[(name, version)] = release_of(name, version, _load_version(name, version, path).schema)
    if new:
        _write_releases(root, {**releases, **new})
    return list(new.values())
