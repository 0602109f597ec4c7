"""Released versions against a registry: the mock:// one of confluent-kafka, the in-memory one."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from schemas import AVRO_DIR, ConfluentSchemaRegistry, InMemorySchemaRegistry, default_catalog
from schemas.registry_check import check_registry, register_missing
from schemas.releases import load_releases
from schemas.topics import topic_for


@pytest.fixture
def registry() -> ConfluentSchemaRegistry:
    # Each client of a mock:// URL has a store of its own: a fresh, empty registry.
    return ConfluentSchemaRegistry(url=f"mock://{uuid.uuid4().hex}")


def _released_count() -> int:
    releases = load_releases(AVRO_DIR)
    assert releases is not None
    return len(releases)


def test_an_empty_registry_misses_every_released_version(
    registry: ConfluentSchemaRegistry,
) -> None:
    problems = check_registry(registry)
    assert {p.kind for p in problems} == {"missing"}
    assert len(problems) == _released_count()
    audit = next(p for p in problems if p.subject == "audit_event")
    assert audit.registry_subject == "sidestream.audit-value"
    assert "audit_event v1" in audit.message
    assert "--register" in audit.message


def test_registering_the_missing_versions_makes_the_registry_agree(
    registry: ConfluentSchemaRegistry,
) -> None:
    registered = register_missing(registry)
    assert len(registered) == _released_count()
    # Oldest first, so registry versions follow ours.
    analytics = [(v, s) for s, v, _ in registered if s == "sidestream.analytics-value"]
    assert [v for v, _ in analytics] == [1, 2]
    assert check_registry(registry) == []
    assert register_missing(registry) == []


def test_a_schema_registered_past_the_release_is_different(
    registry: ConfluentSchemaRegistry,
) -> None:
    register_missing(registry)
    current = default_catalog().current("audit_event")
    schema = json.loads(current.schema_str)
    schema["fields"].append({"name": "severity", "type": ["null", "string"], "default": None})
    registry.register(f"{topic_for('audit_event')}-value", json.dumps(schema))
    [problem] = check_registry(registry)
    assert problem.kind == "different"
    assert "sidestream.audit-value version 2" in problem.message
    assert "no released version of audit_event" in problem.message


def test_same_canonical_form_with_another_logical_type_is_different(
    registry: ConfluentSchemaRegistry,
) -> None:
    current = default_catalog().current("audit_event")
    schema = json.loads(current.schema_str)
    occurred_at = next(f for f in schema["fields"] if f["name"] == "occurred_at")
    occurred_at["type"]["logicalType"] = "timestamp-millis"
    registry.register("sidestream.audit-value", json.dumps(schema))
    problems = check_registry(registry)
    kinds = {p.kind for p in problems if p.subject == "audit_event"}
    assert "different" in kinds
    assert "missing" not in kinds  # the canonical form of v1 is there


def test_a_compatibility_level_other_than_the_rule_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, root)
    registry = InMemorySchemaRegistry()
    register_missing(registry, root)
    registry.set_compatibility(None, "BACKWARD")
    registry.set_compatibility("sidestream.audit-value", "FULL_TRANSITIVE")
    problems = check_registry(registry, root)
    assert {p.kind for p in problems} == {"compatibility"}
    # audit_event agrees (FULL_TRANSITIVE); the others get the global BACKWARD, not theirs.
    assert "audit_event" not in {p.subject for p in problems}
    analytics = next(p for p in problems if p.subject == "analytics_event")
    assert "BACKWARD" in analytics.message
    assert "BACKWARD_TRANSITIVE" in analytics.message
