"""The release record against a schema registry: ``sidestream schemas check --registry``.

With a registry, producers register their schema under ``<topic>-value`` (the topic name
strategy) on first publish. `check_registry` compares what the registry holds under each such
subject with the released versions (``released.yaml``), by canonical form — registry version
numbers need not match ours:

- ``missing``: a released version is not registered (publishing the current one registers it;
  ``--register`` registers every missing one ahead, oldest first);
- ``different``: the registry holds a schema that is no released version (a change that
  bypassed the release, or another branch's schema), or one with a released canonical form
  but different defaults or logical types;
- ``compatibility``: the registry's compatibility level for the subject is not our rule
  (``compatibility.yaml``), so it would accept or refuse other changes than our gate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from schemas.catalog import AVRO_DIR, SchemaCatalog
from schemas.compatibility import load_rules
from schemas.errors import SchemaError
from schemas.releases import Release, load_releases, release_of
from schemas.topics import topic_for

__all__ = ["RegistryProblem", "RegistryView", "check_registry", "register_missing"]


class RegistryView(Protocol):
    """What the comparison needs to read from a registry (both registries of
    `schemas.registry` have it)."""

    url: str

    def registered(self, subject: str) -> list[tuple[int, str]]: ...

    def compatibility(self, subject: str) -> str | None: ...

    def register(self, subject: str, schema: str) -> int: ...


@dataclass(frozen=True, slots=True)
class RegistryProblem:
    """One disagreement between the release record and the registry."""

    kind: Literal["missing", "different", "compatibility"]
    subject: str
    registry_subject: str
    message: str
    version: int | None = None
    """The released version concerned, when one is."""

    def __str__(self) -> str:
        return self.message


def _registry_subject(subject: str) -> str:
    return f"{topic_for(subject)}-value"


def _released_by_subject(root: Path) -> dict[str, list[Release]]:
    releases = load_releases(root)
    if releases is None:
        raise SchemaError(
            f"no release record in {root}: run `sidestream schemas release` before comparing "
            "with a registry"
        )
    found: dict[str, list[Release]] = {}
    for (subject, _), entry in sorted(releases.items()):
        found.setdefault(subject, []).append(entry)
    return found


def check_registry(registry: RegistryView, root: Path = AVRO_DIR) -> list[RegistryProblem]:
    """Compare every released version under `root` with `registry`; empty when they agree.

    Each subject is compared with ``<topic>-value``, its topic taken from ``topics.yaml``.
    Raises `RegistryError` when the registry cannot be read, `SchemaError`
    without a release record.
    """
    released = _released_by_subject(root)
    default, rules = load_rules(root)
    problems: list[RegistryProblem] = []
    for subject, entries in released.items():
        target = _registry_subject(subject)
        by_crc = {entry.crc64_avro: entry for entry in entries}
        matched: set[int] = set()
        for number, text in registry.registered(target):
            try:
                schema = json.loads(text)
                now = release_of(subject, 0, schema)
            except (ValueError, TypeError, KeyError) as exc:
                problems.append(
                    RegistryProblem(
                        "different",
                        subject,
                        target,
                        f"{target} version {number} in {registry.url} is not an Avro schema "
                        f"we can read ({exc}): it is no released version of {subject}",
                    )
                )
                continue
            entry = by_crc.get(now.crc64_avro)
            if entry is None:
                known = ", ".join(f"v{e.version} {e.crc64_avro}" for e in entries)
                problems.append(
                    RegistryProblem(
                        "different",
                        subject,
                        target,
                        f"{target} version {number} in {registry.url} (CRC-64-AVRO "
                        f"{now.crc64_avro}) is no released version of {subject} (released: "
                        f"{known}): find who registered it; release it here as a new version "
                        "or delete it from the registry",
                    )
                )
                continue
            matched.add(entry.version)
            if entry.definition_sha256 != now.definition_sha256:
                problems.append(
                    RegistryProblem(
                        "different",
                        subject,
                        target,
                        f"{target} version {number} in {registry.url} has the canonical form "
                        f"of {subject} v{entry.version} (CRC-64-AVRO {entry.crc64_avro}) but "
                        "other defaults, aliases or logical types: readers resolving through "
                        "the registry would read differently; register the released schema",
                    )
                )
        for entry in entries:
            if entry.version not in matched:
                problems.append(
                    RegistryProblem(
                        "missing",
                        subject,
                        target,
                        f"{subject} v{entry.version} (CRC-64-AVRO {entry.crc64_avro}) is "
                        f"released but not registered under {target} in {registry.url}: "
                        "publishing registers the current version; to register every "
                        "released version now: `sidestream schemas check --registry --register`",
                        version=entry.version,
                    )
                )
        rule = rules.get(subject, default)
        level = registry.compatibility(target)
        if level is not None and level != rule:
            problems.append(
                RegistryProblem(
                    "compatibility",
                    subject,
                    target,
                    f"{target} in {registry.url} has compatibility {level}, but {subject}'s "
                    f"rule is {rule} (compatibility.yaml): set the subject's level in the "
                    f"registry to {rule} (PUT /config/{target}), or change the rule here",
                )
            )
    return problems


def register_missing(registry: RegistryView, root: Path = AVRO_DIR) -> list[tuple[str, int, int]]:
    """Register every released version the registry lacks, oldest first, as the schema file
    holds it (docs included, as producers register it). Returns ``(registry subject, version,
    schema id)`` of each. Raises `RegistryError` when the registry refuses one (its own
    compatibility check), leaving those before it registered."""
    catalog = SchemaCatalog.load(root)
    done: list[tuple[str, int, int]] = []
    for problem in check_registry(registry, root):
        if problem.kind != "missing" or problem.version is None:
            continue
        version = problem.version
        schema = catalog.versions(problem.subject)[version - 1]
        schema_id = registry.register(problem.registry_subject, schema.schema_str)
        done.append((problem.registry_subject, version, schema_id))
    return done
