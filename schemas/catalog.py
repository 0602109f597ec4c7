"""The Avro schemas kept in the repository, loaded once and indexed by subject and fingerprint.

Layout: ``<root>/<subject>/v<N>.avsc``, one file per version, never edited once released;
the highest N is the current version, the one producers write and consumers read into. Older
versions stay so that records they wrote can still be decoded (found by fingerprint) and so that
the compatibility gate can compare against them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.errors import SchemaError

__all__ = [
    "AVRO_DIR",
    "SchemaCatalog",
    "SchemaVersion",
    "default_catalog",
    "fingerprint",
    "version_files",
]

AVRO_DIR = Path(__file__).resolve().parent / "avro"
"""The schemas shipped with the package."""

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


def fingerprint(schema: Mapping[str, Any]) -> bytes:
    """The CRC-64-AVRO (Rabin) fingerprint of a schema's Parsing Canonical Form.

    Returned as the 8 bytes that follow the ``C3 01`` marker in Avro single-object encoding
    (little-endian). Docs, defaults, aliases and logical types do not change it.
    """
    return _canonical_fingerprint(to_parsing_canonical_form(dict(schema)))


def _canonical_fingerprint(canonical: str) -> bytes:
    # fastavro gives the hex of the fingerprint's bytes in little-endian order, as on the wire.
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One released version of one subject."""

    subject: str
    version: int
    path: Path
    schema: Mapping[str, Any]
    """The schema as written in the file (docs and logical types included)."""
    canonical_form: str
    fingerprint: bytes

    @property
    def full_name(self) -> str:
        """The record's full name, e.g. ``io.sidestream.events.AuditEvent``."""
        name = str(self.schema["name"])
        namespace = self.schema.get("namespace")
        return name if "." in name or not namespace else f"{namespace}.{name}"

    @property
    def schema_str(self) -> str:
        """The schema as compact JSON, as registered in a schema registry."""
        return json.dumps(self.schema, separators=(",", ":"))


def version_files(root: Path) -> dict[str, list[tuple[int, Path]]]:
    """Map each subject under `root` to its ``(version, path)`` pairs, oldest first.

    Raises `SchemaError` for a stray ``.avsc`` file whose name is not ``v<N>.avsc`` and for a
    subject whose versions do not run 1, 2, ... without gaps: a missing version would silently
    skip a compatibility check.
    """
    if not root.is_dir():
        raise SchemaError(f"schema directory {root} does not exist")
    subjects: dict[str, list[tuple[int, Path]]] = {}
    for subject_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(subject_dir.glob("*.avsc"))
        if not files:
            continue
        versions: list[tuple[int, Path]] = []
        for path in files:
            match = _VERSION_FILE.fullmatch(path.name)
            if match is None:
                raise SchemaError(f"{path}: schema files must be named v<N>.avsc (v1.avsc, ...)")
            versions.append((int(match.group(1)), path))
        versions.sort()
        numbers = [number for number, _ in versions]
        if numbers != list(range(1, len(numbers) + 1)):
            raise SchemaError(f"{subject_dir}: versions must run v1, v2, ... without gaps")
        subjects[subject_dir.name] = versions
    return subjects


def _load_version(subject: str, version: int, path: Path) -> SchemaVersion:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        # Parsing checks the schema is valid Avro before anything is built on it.
        fastavro.parse_schema(schema)
        canonical = to_parsing_canonical_form(schema)
    except (OSError, ValueError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaError(f"{path}: not a valid Avro schema: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaError(f"{path}: the top-level schema must be a record")
    return SchemaVersion(
        subject=subject,
        version=version,
        path=path,
        schema=schema,
        canonical_form=canonical,
        fingerprint=_canonical_fingerprint(canonical),
    )


class SchemaCatalog:
    """Every version of every subject, looked up by subject, version or fingerprint."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        by_subject: dict[str, list[SchemaVersion]] = {}
        for version in versions:
            by_subject.setdefault(version.subject, []).append(version)
        self._by_subject = {
            subject: tuple(sorted(found, key=lambda v: v.version))
            for subject, found in sorted(by_subject.items())
        }
        # Two versions may share a fingerprint when only docs or defaults changed: their binary
        # encodings are the same, so either decodes the record; the newer one wins.
        self._by_fingerprint = {
            version.fingerprint: version for found in self._by_subject.values() for version in found
        }

    @classmethod
    def load(cls, root: Path = AVRO_DIR) -> SchemaCatalog:
        """Read and check every ``<root>/<subject>/v<N>.avsc``; raise `SchemaError` if invalid."""
        return cls(
            _load_version(subject, number, path)
            for subject, found in version_files(root).items()
            for number, path in found
        )

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self._by_subject)

    def versions(self, subject: str) -> tuple[SchemaVersion, ...]:
        """All versions of `subject`, oldest first."""
        try:
            return self._by_subject[subject]
        except KeyError:
            raise SchemaError(f"unknown subject {subject!r}") from None

    def current(self, subject: str) -> SchemaVersion:
        """The highest version of `subject`: what producers write."""
        return self.versions(subject)[-1]

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version whose canonical form has this CRC-64-AVRO fingerprint, if any."""
        return self._by_fingerprint.get(fingerprint)


@functools.cache
def default_catalog() -> SchemaCatalog:
    """The catalog of the schemas shipped in this package (read once per process)."""
    return SchemaCatalog.load(AVRO_DIR)
