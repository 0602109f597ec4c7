"""Serializing and deserializing events: both wire formats, evolution, validation, bad bytes."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import fastavro
import pytest

from schemas import (
    EVENT_TYPES,
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    DecodeError,
    Event,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
    NotificationRequested,
    SchemaError,
    UnknownSchemaError,
    ValidationError,
    default_catalog,
    fingerprint,
    trace_headers,
    traceparent_from_headers,
    validate,
)
from schemas.registry import _redacted
from tests.support.events import (
    every_event_type,
    sample_analytics,
    sample_audit,
    sample_entity,
    sample_notification,
)

TOPIC = "events.test"


def _ids(events: list[Event]) -> list[str]:
    return [f"{type(e).__name__}-{i}" for i, e in enumerate(events)]


def _reference_body(event: Event) -> bytes:
    """The Avro body as fastavro writes it from the schema file as is (logical types and all):
    an encoder written independently of the one under test."""
    schema = fastavro.parse_schema(dict(default_catalog().current(event.SUBJECT).schema))
    record = {
        f.name: value.value if isinstance(value, Enum) else value
        for f in dataclasses.fields(event)
        for value in [getattr(event, f.name)]
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _rabin_fingerprint(canonical_form: str) -> bytes:
    """CRC-64-AVRO exactly as the Avro specification spells it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in canonical_form.encode():
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


@pytest.fixture
def registry() -> InMemorySchemaRegistry:
    return InMemorySchemaRegistry()


@pytest.fixture(params=["single-object", "confluent"])
def serde(
    request: pytest.FixtureRequest, registry: InMemorySchemaRegistry
) -> tuple[EventSerializer, EventDeserializer]:
    """A serializer/deserializer pair for each wire format."""
    if request.param == "single-object":
        return EventSerializer(), EventDeserializer()
    return (
        EventSerializer(schema_registry=registry),
        EventDeserializer(schema_registry=registry),
    )


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", every_event_type(), ids=_ids(every_event_type()))
def test_round_trip_single_object(event: Event) -> None:
    value = EventSerializer().serialize(event, TOPIC)

    current = default_catalog().current(event.SUBJECT)
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == current.fingerprint
    assert value[10:] == _reference_body(event)
    assert EventDeserializer().deserialize(value, TOPIC) == event


@pytest.mark.parametrize("event", every_event_type(), ids=_ids(every_event_type()))
def test_round_trip_confluent(event: Event, registry: InMemorySchemaRegistry) -> None:
    value = EventSerializer(schema_registry=registry).serialize(event, TOPIC)

    assert value[0] == 0
    schema_id = int.from_bytes(value[1:5], "big")
    assert json.loads(registry.lookup(schema_id)) == default_catalog().current(event.SUBJECT).schema
    assert registry.subject_versions(f"{TOPIC}-value") == [schema_id]
    assert value[5:] == _reference_body(event)
    assert EventDeserializer(schema_registry=registry).deserialize(value, TOPIC) == event


def test_decoded_events_have_the_python_types() -> None:
    event = sample_audit()
    assert isinstance(event, AuditEvent)
    decoded = EventDeserializer().deserialize(EventSerializer().serialize(event, TOPIC))
    assert isinstance(decoded, AuditEvent)
    assert type(decoded.outcome) is AuditOutcome
    assert decoded.occurred_at.tzinfo is not None
    assert decoded.occurred_at.utcoffset() == timedelta(0)
    assert type(decoded.event_id) is str


def test_the_deserializer_reads_both_formats_whatever_its_config(
    registry: InMemorySchemaRegistry,
) -> None:
    event = sample_analytics()
    single = EventSerializer().serialize(event, TOPIC)
    confluent = EventSerializer(schema_registry=registry).serialize(event, TOPIC)

    with_registry = EventDeserializer(schema_registry=registry)
    assert with_registry.deserialize(single, TOPIC) == event
    assert with_registry.deserialize(confluent, TOPIC) == event
    assert EventDeserializer().deserialize(single, TOPIC) == event


def test_confluent_framing_registers_one_subject_per_topic(
    registry: InMemorySchemaRegistry,
) -> None:
    serializer = EventSerializer(schema_registry=registry)
    event = sample_audit()
    first = serializer.serialize(event, "audit.a")
    second = serializer.serialize(event, "audit.b")
    again = serializer.serialize(event, "audit.a")

    assert registry.subject_versions("audit.a-value") == [int.from_bytes(first[1:5], "big")]
    assert registry.subject_versions("audit.b-value") == [int.from_bytes(second[1:5], "big")]
    assert again[:5] == first[:5]


def test_confluent_framing_needs_a_registry_to_decode(registry: InMemorySchemaRegistry) -> None:
    value = EventSerializer(schema_registry=registry).serialize(sample_audit(), TOPIC)
    with pytest.raises(UnknownSchemaError, match="no schema registry is configured"):
        EventDeserializer().deserialize(value, TOPIC)


def test_an_unknown_schema_id_is_reported(registry: InMemorySchemaRegistry) -> None:
    value = EventSerializer(schema_registry=registry).serialize(sample_audit(), TOPIC)
    other = InMemorySchemaRegistry()  # knows nothing of that id
    with pytest.raises(UnknownSchemaError) as caught:
        EventDeserializer(schema_registry=other).deserialize(value, TOPIC)
    assert caught.value.schema_id == int.from_bytes(value[1:5], "big")


def test_a_registry_schema_no_event_reads_is_unknown(registry: InMemorySchemaRegistry) -> None:
    schema = {"type": "record", "name": "Other", "fields": [{"name": "x", "type": "int"}]}
    schema_id = registry.register("other-value", json.dumps(schema))
    value = b"\x00" + schema_id.to_bytes(4, "big") + b"\x02"
    with pytest.raises(UnknownSchemaError, match="Other") as caught:
        EventDeserializer(schema_registry=registry).deserialize(value, TOPIC)
    assert caught.value.schema_id == schema_id


# --- the compiled encoder against fastavro on awkward values --------------------------------------


def _edge_cases() -> list[Event]:
    audit, analytics, entity = sample_audit(), sample_analytics(), sample_entity()
    plus_five = timezone(timedelta(hours=5))
    return [
        dataclasses.replace(audit, actor_id="x" * 5000),  # length past the varint table
        dataclasses.replace(audit, details={"k": "v" * 4096, "é": "Zürich, 東京 🚀"}),
        dataclasses.replace(audit, details={f"k{i}": str(i) for i in range(200)}),
        dataclasses.replace(audit, details=OrderedDict(a="1")),  # a dict subclass
        dataclasses.replace(audit, actor_id="", resource_id="Ünïcödé"),
        dataclasses.replace(audit, occurred_at=datetime(1960, 2, 29, 1, 2, 3, 4, tzinfo=UTC)),
        dataclasses.replace(audit, occurred_at=datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
        dataclasses.replace(audit, occurred_at=datetime(2025, 1, 1, 5, 0, tzinfo=plus_five)),
        dataclasses.replace(audit, occurred_at=datetime(1970, 1, 1, tzinfo=UTC)),
        dataclasses.replace(audit, event_id=audit.event_id.upper()),
        dataclasses.replace(analytics, value=0),
        dataclasses.replace(analytics, value=-1.5e300),
        dataclasses.replace(analytics, value=float("inf")),
        dataclasses.replace(entity, version=0),
        dataclasses.replace(entity, version=-1),
        dataclasses.replace(entity, version=4095),
        dataclasses.replace(entity, version=4096),
        dataclasses.replace(entity, version=2**63 - 1),
        dataclasses.replace(entity, version=-(2**63)),
    ]


@pytest.mark.parametrize("event", _edge_cases(), ids=_ids(_edge_cases()))
def test_awkward_values_encode_like_fastavro_and_round_trip(event: Event) -> None:
    value = EventSerializer().serialize(event, TOPIC)
    assert value[10:] == _reference_body(event)
    assert EventDeserializer().deserialize(value, TOPIC) == event


def test_the_serializer_writes_the_version_it_encodes_with() -> None:
    event = dataclasses.replace(sample_analytics(), schema_version=1)
    decoded = EventDeserializer().deserialize(EventSerializer().serialize(event, TOPIC))
    assert decoded.schema_version == AnalyticsEvent.SCHEMA_VERSION == 2


# --- schema evolution --------------------------------------------------------------------------


def _analytics_v1_value(**fields: Any) -> bytes:
    """An analytics event as a v1 producer (before `platform` existed) would have written it."""
    v1 = default_catalog().versions("analytics_event")[0]
    assert v1.version == 1
    record = {
        "event_id": str(uuid.uuid4()),
        "event_type": "analytics_event",
        "tenant_id": "tenant-1",
        "occurred_at": datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC),
        "producer": "legacy-web",
        "schema_version": 1,
        "name": "page_view",
        "user_id": None,
        "session_id": "s-9",
        "properties": {"path": "/pricing"},
        "value": None,
        **fields,
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(dict(v1.schema)), record)
    return b"\xc3\x01" + v1.fingerprint + buffer.getvalue()


def test_v1_records_read_as_the_current_class_with_defaults() -> None:
    value = _analytics_v1_value(value=3.5)

    event = EventDeserializer().deserialize(value, TOPIC)

    assert isinstance(event, AnalyticsEvent)
    assert event.platform == "unknown"  # filled from the v2 default
    assert event.schema_version == 1  # as written
    assert event.name == "page_view"
    assert event.session_id == "s-9"
    assert event.properties == {"path": "/pricing"}
    assert event.value == 3.5
    assert event.occurred_at == datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def test_old_versions_are_found_by_fingerprint() -> None:
    catalog = default_catalog()
    for subject in catalog.subjects:
        for version in catalog.versions(subject):
            assert catalog.by_fingerprint(version.fingerprint) == version
            assert version.fingerprint == _rabin_fingerprint(version.canonical_form)
            assert fingerprint(version.schema) == version.fingerprint
    v1, v2 = catalog.versions("analytics_event")
    assert catalog.by_fingerprint(v1.fingerprint) is v1
    assert catalog.by_fingerprint(v2.fingerprint) is v2
    assert catalog.by_fingerprint(b"\x00" * 8) is None


def test_docs_and_logical_types_do_not_change_the_fingerprint() -> None:
    current = dict(default_catalog().current("audit_event").schema)
    plain = json.loads(json.dumps(current).replace('"doc"', '"comment"'))
    assert fingerprint(plain) == fingerprint(current)
    renamed = {**current, "name": "AuditEventRenamed"}
    assert fingerprint(renamed) != fingerprint(current)


def test_old_registry_versions_resolve_into_the_current_class(
    registry: InMemorySchemaRegistry,
) -> None:
    """A registry id for v1 (registered by an old producer) reads like the v1 fingerprint."""
    v1 = default_catalog().versions("analytics_event")[0]
    schema_id = registry.register("analytics-value", v1.schema_str)
    single_object = _analytics_v1_value()
    value = b"\x00" + schema_id.to_bytes(4, "big") + single_object[10:]

    event = EventDeserializer(schema_registry=registry).deserialize(value, TOPIC)

    assert isinstance(event, AnalyticsEvent)
    assert event.platform == "unknown"
    assert event == EventDeserializer().deserialize(single_object, TOPIC)


def test_newer_registry_versions_resolve_into_the_current_class(
    registry: InMemorySchemaRegistry,
) -> None:
    """A producer already on a v3 this consumer lacks: its extra field is skipped."""
    current = default_catalog().current("analytics_event")
    v3 = json.loads(current.schema_str)
    v3["fields"].append({"name": "country", "type": "string", "default": "", "doc": "ISO code"})
    schema_id = registry.register("analytics-value", json.dumps(v3))
    event = sample_analytics()
    record = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    record["country"] = "DE"
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(v3), record)
    value = b"\x00" + schema_id.to_bytes(4, "big") + buffer.getvalue()

    assert EventDeserializer(schema_registry=registry).deserialize(value, TOPIC) == event


# --- validation --------------------------------------------------------------------------------


def _audit_with(**changes: Any) -> AuditEvent:
    return dataclasses.replace(sample_audit(), **changes)


INVALID: list[tuple[str, Callable[[], Event], str]] = [
    ("actor_id", lambda: _audit_with(actor_id=123), "expected a string"),
    ("actor_id", lambda: _audit_with(actor_id=None), "required"),
    ("action", lambda: _audit_with(action=b"bytes"), "expected a string"),
    ("resource_id", lambda: _audit_with(resource_id="\ud800"), "UTF-8"),
    ("event_id", lambda: _audit_with(event_id="not-a-uuid"), "UUID"),
    ("event_type", lambda: _audit_with(event_type="analytics_event"), "unknown event type"),
    ("occurred_at", lambda: _audit_with(occurred_at=datetime(2024, 1, 1)), "timezone-aware"),
    ("occurred_at", lambda: _audit_with(occurred_at=1_700_000_000), "expected a datetime"),
    ("outcome", lambda: _audit_with(outcome="SUCCESS"), "AuditOutcome"),
    ("outcome", lambda: _audit_with(outcome=ChangeKind.CREATED), "AuditOutcome"),
    ("ip", lambda: _audit_with(ip=42), "expected a string"),
    ("details", lambda: _audit_with(details={"n": 1}), "must be a string"),
    ("details", lambda: _audit_with(details={1: "x"}), "keys must be strings"),
    ("details", lambda: _audit_with(details=[("a", "b")]), "dict"),
    ("tenant_id", lambda: _audit_with(tenant_id=None), "required"),
    ("schema_version", lambda: _audit_with(schema_version="1"), "integer"),
    (
        "version",
        lambda: dataclasses.replace(sample_entity(), version=True),
        "integer",
    ),
    (
        "version",
        lambda: dataclasses.replace(sample_entity(), version=2**63),
        "out of range",
    ),
    (
        "value",
        lambda: dataclasses.replace(sample_analytics(), value="1.5"),  # type: ignore[arg-type]
        "number",
    ),
    (
        "channel",
        lambda: dataclasses.replace(sample_notification(), channel="EMAIL"),  # type: ignore[arg-type]
        "NotificationChannel",
    ),
]


@pytest.mark.parametrize(
    ("field", "build", "message"),
    INVALID,
    ids=[f"{field}-{i}" for i, (field, _, _) in enumerate(INVALID)],
)
def test_invalid_events_are_refused_naming_the_field(
    serde: tuple[EventSerializer, EventDeserializer],
    registry: InMemorySchemaRegistry,
    field: str,
    build: Callable[[], Event],
    message: str,
) -> None:
    serializer, _ = serde
    event = build()

    with pytest.raises(ValidationError, match=message) as caught:
        serializer.serialize(event, TOPIC)

    assert caught.value.field == field
    assert field in str(caught.value)
    assert caught.value.event_type == event.SUBJECT
    with pytest.raises(ValidationError):
        validate(event)
    # Nothing may reach the registry for an invalid event.
    assert registry.subject_versions(f"{TOPIC}-value") == []


def test_unknown_event_classes_are_refused(
    serde: tuple[EventSerializer, EventDeserializer],
) -> None:
    serializer, _ = serde

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Rogue(Event):
        SUBJECT = "rogue"
        KIND = "rogue"
        SCHEMA_VERSION = 1

    base = sample_audit()
    rogue = Rogue(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Event)})
    for thing in (rogue, {"event_type": "audit_event"}, None):
        with pytest.raises(ValidationError, match="unknown event type") as caught:
            serializer.serialize(thing, TOPIC)  # type: ignore[arg-type]
        assert caught.value.field is None


def test_valid_events_pass_validate() -> None:
    for event in every_event_type() + _edge_cases():
        validate(event)


# --- bad bytes ---------------------------------------------------------------------------------


def test_random_bytes_are_a_decode_error() -> None:
    deserializer = EventDeserializer()
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        if data[:1] in (b"\x00", b"\xc3"):
            data = b"\x7f" + data
        with pytest.raises(DecodeError, match="not an encoded event"):
            deserializer.deserialize(data, TOPIC)
    with pytest.raises(DecodeError):
        deserializer.deserialize(b"", TOPIC)


@pytest.mark.parametrize("event", every_event_type(), ids=_ids(every_event_type()))
def test_every_truncation_is_a_decode_error(event: Event) -> None:
    value = EventSerializer().serialize(event, TOPIC)
    deserializer = EventDeserializer()
    for size in range(len(value)):
        with pytest.raises(DecodeError) as caught:
            deserializer.deserialize(value[:size], TOPIC)
        assert caught.value.topic == TOPIC


def test_trailing_bytes_are_a_decode_error() -> None:
    value = EventSerializer().serialize(sample_audit(), TOPIC)
    with pytest.raises(DecodeError, match="trailing"):
        EventDeserializer().deserialize(value + b"\x00", TOPIC)


def test_corrupt_bodies_raise_only_decode_errors() -> None:
    """Flipped bytes either still decode (to some event) or raise DecodeError, nothing else."""
    value = EventSerializer().serialize(sample_audit(), TOPIC)
    deserializer = EventDeserializer()
    rng = random.Random(11)
    failures = 0
    for _ in range(300):
        corrupt = bytearray(value)
        for _ in range(3):
            corrupt[rng.randrange(10, len(corrupt))] = rng.randrange(256)
        try:
            deserializer.deserialize(bytes(corrupt), TOPIC)
        except DecodeError:
            failures += 1
    assert failures > 0


def test_an_out_of_range_enum_index_is_a_decode_error() -> None:
    event = sample_entity()
    value = EventSerializer().serialize(event, TOPIC)
    assert value.endswith(b"\x04")  # change_kind DELETED is symbol 2, the last field
    with pytest.raises(DecodeError):
        EventDeserializer().deserialize(value[:-1] + b"\x0e", TOPIC)


def test_an_unknown_fingerprint_is_reported() -> None:
    value = EventSerializer().serialize(sample_audit(), TOPIC)
    unknown = b"\xc3\x01" + b"\x01\x02\x03\x04\x05\x06\x07\x08" + value[10:]
    with pytest.raises(UnknownSchemaError, match="0102030405060708") as caught:
        EventDeserializer().deserialize(unknown, TOPIC)
    assert caught.value.fingerprint == b"\x01\x02\x03\x04\x05\x06\x07\x08"
    assert caught.value.topic == TOPIC
    assert isinstance(caught.value, SchemaError)


# --- configuration -----------------------------------------------------------------------------


def test_contradictory_registry_settings_are_refused(registry: InMemorySchemaRegistry) -> None:
    with pytest.raises(ValueError, match="either"):
        EventSerializer(schema_registry=registry, schema_registry_url="http://localhost:8081")
    with pytest.raises(ValueError, match="url"):
        EventDeserializer(schema_registry_config={"basic.auth.user.info": "a:b"})
    with pytest.raises(TypeError):
        EventSerializer(schema_registry=object())  # type: ignore[arg-type]


def test_an_empty_topic_is_refused_with_a_registry(registry: InMemorySchemaRegistry) -> None:
    with pytest.raises(ValueError, match="topic"):
        EventSerializer(schema_registry=registry).serialize(sample_audit(), "")


def test_registry_urls_lose_their_credentials_in_messages() -> None:
    assert _redacted("https://user:s3cret@registry.example.com:8081/x") == (
        "https://***@registry.example.com:8081/x"
    )
    assert _redacted("mock://plain") == "mock://plain"


# --- confluent-kafka's schema registry client (mock:// URLs) -----------------------------------


@pytest.fixture
def confluent_registry() -> Any:
    pytest.importorskip(
        "confluent_kafka.schema_registry",
        reason="needs the confluent-kafka[schemaregistry] extra",
        exc_type=ImportError,
    )
    from schemas import ConfluentSchemaRegistry

    return ConfluentSchemaRegistry(url=f"mock://{uuid.uuid4().hex}")


@pytest.mark.parametrize("event", every_event_type(), ids=_ids(every_event_type()))
def test_round_trip_through_confluent_mock_registry(event: Event, confluent_registry: Any) -> None:
    value = EventSerializer(schema_registry=confluent_registry).serialize(event, TOPIC)
    assert value[0] == 0
    assert value[5:] == _reference_body(event)
    assert EventDeserializer(schema_registry=confluent_registry).deserialize(value, TOPIC) == event


def test_confluent_mock_registry_reports_unknown_ids(confluent_registry: Any) -> None:
    with pytest.raises(UnknownSchemaError) as caught:
        EventDeserializer(schema_registry=confluent_registry).deserialize(
            b"\x00\x00\x00\x30\x39" + b"\x00", TOPIC
        )
    assert caught.value.schema_id == 12345


def test_a_registry_url_selects_the_confluent_format() -> None:
    pytest.importorskip(
        "confluent_kafka.schema_registry",
        reason="needs the confluent-kafka[schemaregistry] extra",
        exc_type=ImportError,
    )
    serializer = EventSerializer(schema_registry_url=f"mock://{uuid.uuid4().hex}")
    assert serializer.serialize(sample_audit(), TOPIC)[0] == 0
    with pytest.raises(ValueError, match="contradictory"):
        EventSerializer(schema_registry_url="mock://a", schema_registry_config={"url": "mock://b"})


# --- trace headers -----------------------------------------------------------------------------

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_trace_context_travels_in_headers() -> None:
    headers = trace_headers(TRACEPARENT)
    assert headers == [("traceparent", TRACEPARENT.encode())]
    assert traceparent_from_headers([("other", b"x"), *headers]) == TRACEPARENT
    assert trace_headers(None) == []
    assert traceparent_from_headers(None) == traceparent_from_headers([]) is None


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ],
)
def test_malformed_traceparents_are_refused_or_ignored(bad: str) -> None:
    with pytest.raises(ValueError, match="traceparent"):
        trace_headers(bad)
    assert traceparent_from_headers([("traceparent", bad.encode())]) is None


def test_double_is_little_endian_ieee754() -> None:
    """Guards the compiled encoder's struct format against a silent byte-order slip."""
    event = dataclasses.replace(sample_analytics(), value=1.0)
    value = EventSerializer().serialize(event, TOPIC)
    assert struct.pack("<d", 1.0) in value


def test_every_event_type_has_a_sample() -> None:
    assert {type(e) for e in every_event_type()} == set(EVENT_TYPES.values())


def test_v1_notification_requests_with_a_webhook_url_still_decode() -> None:
    """Records written before webhook endpoints: a raw URL in `recipient`, no endpoint."""
    v1 = default_catalog().versions("notification_requested")[0]
    assert v1.version == 1
    record = {
        "event_id": str(uuid.uuid4()),
        "event_type": "notification_requested",
        "tenant_id": "tenant-1",
        "occurred_at": datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
        "producer": "old-api",
        "schema_version": 1,
        "notification_id": str(uuid.uuid4()),
        "channel": "WEBHOOK",
        "recipient": "https://hooks.example.com/in",
        "template": "invoice_paid",
        "params": {"invoice": "7"},
        "dedupe_key": None,
    }
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(dict(v1.schema)), record)
    value = b"\xc3\x01" + v1.fingerprint + buffer.getvalue()

    event = EventDeserializer().deserialize(value, TOPIC)

    assert isinstance(event, NotificationRequested)
    assert (event.schema_version, event.endpoint_id) == (1, None)
    assert event.recipient == "https://hooks.example.com/in"
