"""The typed events and the schema files they mirror."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import (
    AVRO_DIR,
    EVENT_TYPES,
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    EntityChanged,
    Event,
    NotificationChannel,
    NotificationRequested,
    SchemaError,
    ValidationError,
    default_catalog,
)
from schemas._codec import EventCodec

ENVELOPE = [
    ("event_id", {"type": "string", "logicalType": "uuid"}),
    ("event_type", "string"),
    ("tenant_id", "string"),
    ("occurred_at", {"type": "long", "logicalType": "timestamp-micros"}),
    ("producer", "string"),
    ("schema_version", "int"),
]


def _audit(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "actor_id": "u-1",
        "action": "invoice.update",
        "resource_type": "invoice",
        "resource_id": "inv-9",
        "outcome": AuditOutcome.SUCCESS,
        **overrides,
    }
    return AuditEvent.new(tenant_id="t-42", producer="billing-api", **fields)


def test_new_fills_the_envelope() -> None:
    before = datetime.now(UTC)
    event = _audit()
    after = datetime.now(UTC)

    assert uuid.UUID(event.event_id).version == 7
    assert str(uuid.UUID(event.event_id)) == event.event_id
    assert event.event_type == "audit_event"
    assert event.schema_version == AuditEvent.SCHEMA_VERSION == 1
    assert event.tenant_id == "t-42"
    assert event.producer == "billing-api"
    assert event.occurred_at.tzinfo is not None
    assert before <= event.occurred_at <= after
    assert event.ip is None
    assert event.details == {}


def test_new_gives_each_event_its_own_time_ordered_id() -> None:
    ids = [_audit().event_id for _ in range(50)]
    assert len(set(ids)) == 50
    timestamps = [uuid.UUID(i).int >> 80 for i in ids]  # UUIDv7: 48-bit unix millis first
    assert timestamps == sorted(timestamps)


def test_new_keeps_a_given_occurred_at() -> None:
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    event = EntityChanged.new(
        tenant_id="t",
        producer="p",
        occurred_at=when,
        entity_type="customer",
        entity_id="c-1",
        version=3,
        change_kind=ChangeKind.UPDATED,
    )
    assert event.occurred_at == when


def test_new_names_a_missing_field() -> None:
    with pytest.raises(ValidationError, match="resource_id") as caught:
        AuditEvent.new(
            tenant_id="t",
            producer="p",
            actor_id="u",
            action="a",
            resource_type="r",
            outcome=AuditOutcome.DENIED,
        )
    assert caught.value.field == "resource_id"
    assert caught.value.event_type == "audit_event"


def test_new_names_an_unknown_field() -> None:
    with pytest.raises(ValidationError, match="colour") as caught:
        _audit(colour="blue")
    assert caught.value.field == "colour"


@pytest.mark.parametrize("name", ["event_id", "event_type", "schema_version"])
def test_new_refuses_envelope_fields_it_sets(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _audit(**{name: "x"})
    assert caught.value.field == name


def test_the_base_class_is_not_an_event_type() -> None:
    with pytest.raises(ValidationError, match="not an event type"):
        Event.new(tenant_id="t", producer="p")


def test_events_are_frozen_and_slotted() -> None:
    event = _audit()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.tenant_id = "other"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_keys_keep_per_tenant_and_per_entity_order() -> None:
    assert _audit().key == b"t-42"
    analytics = AnalyticsEvent.new(tenant_id="t-7", producer="web", name="page_view")
    assert analytics.key == b"t-7"
    notification = NotificationRequested.new(
        tenant_id="t-7",
        producer="billing-api",
        notification_id=str(uuid.uuid4()),
        channel=NotificationChannel.EMAIL,
        recipient="ops@example.com",
        template="invoice_paid",
    )
    assert notification.key == b"t-7"
    entity = EntityChanged.new(
        tenant_id="t-7",
        producer="crm",
        entity_type="customer",
        entity_id="c-1",
        version=2,
        change_kind=ChangeKind.CREATED,
    )
    assert entity.key == b"t-7:customer:c-1"


def test_notification_dedupe_key_falls_back_to_the_notification_id() -> None:
    notification_id = str(uuid.uuid4())
    common = {
        "tenant_id": "t",
        "producer": "p",
        "notification_id": notification_id,
        "channel": NotificationChannel.WEBHOOK,
        "recipient": "https://hooks.example.com/x",
        "template": "t",
    }
    assert NotificationRequested.new(**common).effective_dedupe_key == notification_id  # type: ignore[arg-type]
    keyed = NotificationRequested.new(**common, dedupe_key="inv-9-paid")  # type: ignore[arg-type]
    assert keyed.effective_dedupe_key == "inv-9-paid"


def test_event_types_cover_every_subject() -> None:
    assert set(EVENT_TYPES) == set(default_catalog().subjects)
    assert {cls.KIND for cls in EVENT_TYPES.values()} == {
        "audit",
        "analytics",
        "notification",
        "entity",
    }
    for subject, cls in EVENT_TYPES.items():
        assert subject == cls.SUBJECT


@pytest.mark.parametrize("subject", sorted(EVENT_TYPES))
def test_classes_follow_the_current_schema(subject: str) -> None:
    cls = EVENT_TYPES[subject]
    current = default_catalog().current(subject)
    assert current.version == cls.SCHEMA_VERSION
    assert [f.name for f in dataclasses.fields(cls)] == [
        f["name"] for f in current.schema["fields"]
    ]
    EventCodec(cls, current)  # checks types and enum symbols; raises SchemaError on drift


def test_a_class_that_does_not_follow_its_schema_is_refused() -> None:
    v1 = default_catalog().versions("analytics_event")[0]
    with pytest.raises(SchemaError, match="SCHEMA_VERSION"):
        EventCodec(AnalyticsEvent, v1)


def test_analytics_has_a_v2_with_a_defaulted_field() -> None:
    v1, v2 = default_catalog().versions("analytics_event")
    added = [
        f for f in v2.schema["fields"] if f["name"] not in {g["name"] for g in v1.schema["fields"]}
    ]
    assert [(f["name"], f["type"], f["default"]) for f in added] == [
        ("platform", "string", "unknown")
    ]
    assert v1.fingerprint != v2.fingerprint


def test_schema_files_share_the_envelope_and_document_every_field() -> None:
    files = sorted(AVRO_DIR.glob("*/v*.avsc"))
    assert len(files) >= 5
    for path in files:
        schema = json.loads(path.read_text())
        assert schema["namespace"] == "io.sidestream.events", path
        assert schema.get("doc"), path
        fields = schema["fields"]
        assert [(f["name"], f["type"]) for f in fields[: len(ENVELOPE)]] == ENVELOPE, path
        for field in fields:
            assert field.get("doc"), f"{path}: field {field['name']} has no doc"


def test_enum_symbols_match_the_python_enums() -> None:
    expected = {
        "AuditOutcome": AuditOutcome,
        "NotificationChannel": NotificationChannel,
        "ChangeKind": ChangeKind,
    }
    seen = set()
    for path in AVRO_DIR.glob("*/v*.avsc"):
        for field in json.loads(path.read_text())["fields"]:
            if isinstance(field["type"], dict) and field["type"]["type"] == "enum":
                enum_cls = expected[field["type"]["name"]]
                assert field["type"]["symbols"] == [m.value for m in enum_cls]
                seen.add(field["type"]["name"])
    assert seen == set(expected)
