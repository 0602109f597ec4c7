"""The compiled decoders (`schemas._decode`) against the careful fastavro path.

Random events of every event class (whatever `EVENT_TYPES` holds: values are generated from each
codec's field kinds), every older schema version, both framings; awkward encodings that only
other writers produce; malformed bytes; and the instances the decoders build.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import pickle
import random
import struct
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import fastavro
import fastavro.schema
import pytest

from schemas import (
    EVENT_TYPES,
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    DecodeError,
    EntityChanged,
    Event,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
    SchemaVersion,
    default_catalog,
    fingerprint,
)
from schemas._binary import MalformedRecordError
from schemas._codec import EventCodec, strip_logical_types
from schemas._decode import Decoder, _builder_class, fast_decoder
from schemas._kinds import (
    _Boolean,
    _Enum,
    _Floating,
    _Integer,
    _Kind,
    _Nullable,
    _String,
    _StringMap,
    _TimestampMicros,
)
from schemas.serde import _codecs

TOPIC = "events.fast"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_MICROS = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_MICROS = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(
    microseconds=1
)
_TEXT = "abcxyzABC0129-_./:@ éüßø東京ñ🚀\u0101\u07ff\u0800\uffff\U00010000"


# --- random values from the field kinds ---------------------------------------------------------


def _text(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.1:
        return ""
    size = rng.randrange(60, 300) if roll < 0.2 else rng.randrange(1, 40)
    if rng.random() < 0.5:  # plain ASCII, the common case
        return "".join(rng.choice(_TEXT[:18]) for _ in range(size))
    return "".join(rng.choice(_TEXT) for _ in range(size))


def _value(kind: _Kind, rng: random.Random) -> Any:
    """A random valid value of `kind`, edges included (NaN left out: it is never == itself)."""
    if isinstance(kind, _Nullable):
        return None if rng.random() < 0.3 else _value(kind.inner, rng)
    if isinstance(kind, _String):
        return str(uuid.UUID(int=rng.getrandbits(128))) if kind.uuid else _text(rng)
    if isinstance(kind, _TimestampMicros):
        roll = rng.random()
        if roll < 0.6:
            micros = rng.randrange(1_500_000_000_000_000, 1_900_000_000_000_000)
        elif roll < 0.8:
            micros = rng.choice([0, 1, -1, 63, 64, -64, -65, _MIN_MICROS, _MAX_MICROS])
        else:
            micros = rng.randrange(_MIN_MICROS, _MAX_MICROS + 1)
        return _EPOCH + timedelta(microseconds=micros)
    if isinstance(kind, _Integer):
        if rng.random() < 0.4:
            return rng.choice([0, 1, -1, 63, -64, 64, -65, 4095, 4096, kind.low, kind.high])
        return rng.randrange(kind.low, kind.high + 1) >> rng.randrange(0, 63)
    if isinstance(kind, _Floating):
        roll = rng.random()
        if roll < 0.2:
            number = rng.choice([0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, 5e-324, 1.7e308])
        else:
            number = rng.uniform(-1e6, 1e6) * 10 ** rng.randrange(-30, 30)
        if kind.avro_type == "float":  # a value that survives the trip through 32 bits
            number = struct.unpack("<f", struct.pack("<f", max(-3e38, min(3e38, number))))[0]
        return number
    if isinstance(kind, _Boolean):
        return rng.random() < 0.5
    if isinstance(kind, _Enum):
        return rng.choice(list(kind.enum_cls))
    if isinstance(kind, _StringMap):
        return {_text(rng): _text(rng) for _ in range(rng.choice([0, 0, 1, 2, 3, 8, 40]))}
    raise AssertionError(f"no random values for {type(kind).__name__}: add them here")


E = TypeVar("E", bound=Event)


def _random_event(cls: type[E], rng: random.Random, codec: EventCodec | None = None) -> E:
    codec = codec or _codecs()[cls]
    values = {name: _value(kind, rng) for name, kind in codec.fields}
    values.update(event_type=cls.SUBJECT, schema_version=cls.SCHEMA_VERSION)
    return cls(**values)


def _same(a: object, b: object) -> bool:
    """Equal, NaN included (decoded from corrupt bytes): same type, same repr. Two errors are
    the same when their types are (fastavro's messages hold object addresses)."""
    return type(a) is type(b) and (isinstance(a, Exception) or a == b or repr(a) == repr(b))


def _careful(value: bytes, deserializer: EventDeserializer | None = None) -> Event:
    return (deserializer or EventDeserializer())._deserialize_carefully(value, TOPIC)


def _decoder(cls: type[Event], version: SchemaVersion | None = None, offset: int = 10) -> Decoder:
    codec = _codecs()[cls]
    version = version or codec.current
    decoder = fast_decoder(codec, version.fingerprint, version.schema, offset)
    assert decoder is not None, f"no compiled decoder for {cls.__name__} from v{version.version}"
    return decoder


CLASSES = sorted(EVENT_TYPES.values(), key=lambda cls: cls.__name__)


# --- agreement with the careful path ------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_random_events_decode_like_fastavro(cls: type[Event]) -> None:
    rng = random.Random(f"fast-decode-{cls.__name__}")
    serializer, deserializer = EventSerializer(), EventDeserializer()
    decoder = _decoder(cls)
    for _ in range(400):
        event = _random_event(cls, rng)
        value = serializer.serialize(event, TOPIC)

        fast = decoder(value)

        assert fast == event
        assert _same(fast, _careful(value))
        assert [type(getattr(fast, f.name)) for f in dataclasses.fields(fast)] == [
            type(getattr(event, f.name)) for f in dataclasses.fields(event)
        ]
        assert fast.occurred_at.tzinfo is UTC
        assert serializer.serialize(fast, TOPIC) == value  # byte for byte
        assert deserializer.deserialize(value, TOPIC) == event


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_random_events_in_confluent_framing(cls: type[Event]) -> None:
    rng = random.Random(f"fast-confluent-{cls.__name__}")
    registry = InMemorySchemaRegistry()
    serializer = EventSerializer(schema_registry=registry)
    deserializer = EventDeserializer(schema_registry=registry)
    decoder = _decoder(cls, offset=5)
    for _ in range(100):
        event = _random_event(cls, rng)
        value = serializer.serialize(event, TOPIC)
        assert decoder(value) == event
        assert deserializer.deserialize(value, TOPIC) == event
    assert len(deserializer._confluent) == 1  # the header found its compiled decoder


def _written_with(version: SchemaVersion, event: Event) -> bytes:
    """`event` as a producer on `version` wrote it (fields that version lacks are dropped)."""
    record = _codecs()[type(event)].to_avro(event)
    record["schema_version"] = version.version
    buffer = io.BytesIO()
    schema = fastavro.parse_schema(strip_logical_types(version.schema))
    fastavro.schemaless_writer(buffer, schema, record)
    return b"\xc3\x01" + version.fingerprint + buffer.getvalue()


def _older_versions() -> list[tuple[type[Event], SchemaVersion]]:
    catalog = default_catalog()
    return [
        (cls, version)
        for cls in CLASSES
        for version in catalog.versions(cls.SUBJECT)[:-1]
        if version.fingerprint != catalog.current(cls.SUBJECT).fingerprint
    ]


@pytest.mark.parametrize(
    ("cls", "version"),
    _older_versions(),
    ids=[f"{cls.__name__}-v{version.version}" for cls, version in _older_versions()],
)
def test_older_versions_resolve_like_fastavro(cls: type[Event], version: SchemaVersion) -> None:
    rng = random.Random(f"fast-resolve-{cls.__name__}-{version.version}")
    codec = _codecs()[cls]
    decoder = fast_decoder(codec, version.fingerprint, version.schema, 10)
    deserializer = EventDeserializer()
    for _ in range(200):
        value = _written_with(version, _random_event(cls, rng))
        careful = _careful(value)
        if decoder is not None:
            assert _same(decoder(value), careful)
        assert _same(deserializer.deserialize(value, TOPIC), careful)


def test_analytics_v1_has_a_compiled_decoder_filling_the_default() -> None:
    v1 = default_catalog().versions("analytics_event")[0]
    decoder = _decoder(AnalyticsEvent, v1)
    event = _random_event(AnalyticsEvent, random.Random(3))

    decoded = decoder(_written_with(v1, event))

    assert decoded == dataclasses.replace(event, platform="unknown", schema_version=1)


def _registered(registry: InMemorySchemaRegistry, schema: dict[str, Any]) -> int:
    return registry.register(f"{TOPIC}-value", json.dumps(schema))


def _confluent_value(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(strip_logical_types(schema)), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + buffer.getvalue()


def test_a_newer_writer_with_extra_fields_is_read_and_dropped() -> None:
    registry = InMemorySchemaRegistry()
    schema = json.loads(default_catalog().current("audit_event").schema_str)
    schema["fields"].insert(7, {"name": "extra", "type": ["null", "string"], "default": None})
    schema["fields"].append({"name": "tags", "type": {"type": "map", "values": "string"}})
    schema_id = _registered(registry, schema)
    deserializer = EventDeserializer(schema_registry=registry)
    codec = _codecs()[AuditEvent]
    decoder = fast_decoder(codec, fingerprint(schema), schema, 5)
    assert decoder is not None
    rng = random.Random(5)
    for _ in range(100):
        event = _random_event(AuditEvent, rng)
        record = {**codec.to_avro(event), "extra": rng.choice([None, "x" * 70]), "tags": {"a": "b"}}
        value = _confluent_value(schema_id, schema, record)
        assert decoder(value) == event
        assert deserializer.deserialize(value, TOPIC) == event == _careful(value, deserializer)


def test_a_missing_map_field_gets_a_fresh_dict_each_time() -> None:
    registry = InMemorySchemaRegistry()
    schema = json.loads(default_catalog().current("audit_event").schema_str)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "details"]
    schema_id = _registered(registry, schema)
    deserializer = EventDeserializer(schema_registry=registry)
    event = _random_event(AuditEvent, random.Random(8))
    value = _confluent_value(schema_id, schema, _codecs()[AuditEvent].to_avro(event))

    first, second = (deserializer.deserialize(value, TOPIC) for _ in range(2))

    assert len(deserializer._confluent) == 1
    assert first == second == dataclasses.replace(event, details={})
    assert isinstance(first, AuditEvent)
    assert isinstance(second, AuditEvent)
    assert first.details is not second.details


@pytest.mark.parametrize(
    "change",
    [
        ("version", "int"),  # promotion long <- int: fastavro's job
        ("change_kind", {"type": "enum", "name": "ChangeKind", "symbols": ["CREATED", "DELETED"]}),
    ],
    ids=["promotion", "enum-symbols"],
)
def test_writers_that_need_real_resolution_take_the_careful_path(
    change: tuple[str, Any],
) -> None:
    name, new_type = change
    registry = InMemorySchemaRegistry()
    schema = json.loads(default_catalog().current("entity_changed").schema_str)
    for field in schema["fields"]:
        if field["name"] == name:
            field["type"] = new_type
    schema_id = _registered(registry, schema)
    assert fast_decoder(_codecs()[EntityChanged], fingerprint(schema), schema, 5) is None
    event = EntityChanged.new(
        tenant_id="t",
        producer="p",
        entity_type="order",
        entity_id="1",
        version=7,
        change_kind=ChangeKind.DELETED,
    )
    record = {**_codecs()[EntityChanged].to_avro(event), "change_kind": "DELETED"}
    value = _confluent_value(schema_id, schema, record)
    deserializer = EventDeserializer(schema_registry=registry)
    for _ in range(2):
        assert deserializer.deserialize(value, TOPIC) == event
    assert deserializer._confluent == {}


# --- encodings our encoder never writes -----------------------------------------------------------


def _audit(**changes: Any) -> AuditEvent:
    event = AuditEvent.new(
        tenant_id="t-1",
        producer="p",
        actor_id="u",
        action="a.b",
        resource_type="r",
        resource_id="1",
        outcome=AuditOutcome.FAILURE,
    )
    return dataclasses.replace(event, **changes)


def _with_tail(tail: bytes, **changes: Any) -> tuple[AuditEvent, bytes]:
    """An audit value whose last field (details, written as an empty map) is replaced."""
    event = _audit(**changes)
    value = EventSerializer().serialize(event, TOPIC)
    assert value.endswith(b"\x00")
    return event, value[:-1] + tail


@pytest.mark.parametrize(
    ("tail", "details"),
    [
        (b"\x01\x08\x02a\x02b\x04\x02c\x00\x02d\x02e\x00", {"a": "b", "c": "", "d": "e"}),
        (b"\x02\x02k\x02v" + b"\x02\x02k\x02w" + b"\x00", {"k": "w"}),  # duplicate key: last wins
        (b"\x82\x00\x02k\x80\x01" + b"v" * 64 + b"\x00", {"k": "v" * 64}),  # long varints
    ],
    ids=["negative-block-count", "two-blocks", "overlong-varints"],
)
def test_awkward_maps_decode_like_fastavro(tail: bytes, details: dict[str, str]) -> None:
    event, value = _with_tail(tail)
    expected = dataclasses.replace(event, details=details)
    assert _careful(value) == expected
    assert _decoder(AuditEvent)(value) == expected
    assert EventDeserializer().deserialize(value, TOPIC) == expected


def test_overlong_varints_decode_like_fastavro() -> None:
    event = _audit(ip=None)
    value = EventSerializer().serialize(event, TOPIC)
    # outcome FAILURE (index 1) then ip null then an empty map: 02 00 00 -> 82 00 | 80 00 | 00
    assert value.endswith(b"\x02\x00\x00")
    overlong_enum = value[:-3] + b"\x82\x00\x00\x00"
    assert _decoder(AuditEvent)(overlong_enum) == event == _careful(overlong_enum)
    # A union branch in two bytes: the compiled decoder leaves it to fastavro.
    overlong_branch = value[:-3] + b"\x02\x80\x00\x00"
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any failure but a final one
        _decoder(AuditEvent)(overlong_branch)
    assert not isinstance(caught.value, MalformedRecordError)
    assert EventDeserializer().deserialize(overlong_branch, TOPIC) == event


def test_short_timestamps_and_bytes_like_objects() -> None:
    serializer, deserializer = EventSerializer(), EventDeserializer()
    for moment in (_EPOCH, _EPOCH - timedelta(microseconds=1), datetime(1, 1, 1, tzinfo=UTC)):
        event = _audit(occurred_at=moment)
        value = serializer.serialize(event, TOPIC)
        assert _decoder(AuditEvent)(value) == event
        for data in (value, bytearray(value), memoryview(value)):
            assert deserializer.deserialize(data, TOPIC) == event  # type: ignore[arg-type]


# --- malformed bytes ------------------------------------------------------------------------------


def _entity_value() -> bytes:
    event = EntityChanged.new(
        tenant_id="t",
        producer="p",
        entity_type="order",
        entity_id="1",
        version=3,
        change_kind=ChangeKind.CREATED,
    )
    value = EventSerializer().serialize(event, TOPIC)
    assert value.endswith(b"\x06\x00")  # version 3, change_kind index 0
    return value


def _expect_final(value: bytes, decoder: Decoder, message: str) -> None:
    """The compiled decoder rejects `value` itself, and the deserializer says why."""
    with pytest.raises(MalformedRecordError, match=message):
        decoder(value)
    deserializer = EventDeserializer()
    deserializer.deserialize(EventSerializer().serialize(_audit(), TOPIC), TOPIC)  # warm up
    deserializer.deserialize(_entity_value(), TOPIC)
    with pytest.raises(DecodeError, match=message) as caught:
        deserializer.deserialize(value, TOPIC)
    assert caught.value.topic == TOPIC
    assert TOPIC in str(caught.value)


def _expect_decode_error(value: bytes, valid: bytes, decoder: Decoder, message: str = "") -> None:
    """The compiled decoder fails on `value` (not for itself: it hands over) and the careful
    path raises `DecodeError`. `valid` has the same header: it installs the compiled decoder."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - any failure hands over to fastavro
        decoder(value)
    assert not isinstance(caught.value, MalformedRecordError)
    deserializer = EventDeserializer()
    deserializer.deserialize(valid, TOPIC)
    with pytest.raises(DecodeError, match=message or None):
        deserializer.deserialize(value, TOPIC)


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"\x06\x06", "change_kind: enum index 3 out of range"),
        (b"\x06\x01", "change_kind: enum index -1 out of range"),  # fastavro wraps it around
        (b"\x06\x80\x01", "change_kind: enum index 64 out of range"),
        (b"\x06\x81\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "longer than 10 bytes"),
        (b"\x06\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "beyond 64 bits"),
    ],
    ids=["enum-index", "negative-enum-index", "enum-index-varint", "long-varint", "overflow"],
)
def test_invalid_enum_indexes_are_final(tail: bytes, message: str) -> None:
    value = _entity_value()[:-2] + tail
    _expect_final(value, _decoder(EntityChanged), message)


def test_an_int_beyond_32_bits_is_final() -> None:
    value = _entity_value()
    # schema_version (v1: one byte 02) sits right before entity_type "order" (0a 6f...).
    at = value.index(b"\x02\x0aorder")
    bad = value[:at] + b"\x80\x80\x80\x80\x10" + value[at + 1 :]  # 2**31, zig-zag encoded
    _expect_final(bad, _decoder(EntityChanged), "schema_version: 2147483648 is out of range")


@pytest.mark.parametrize("branch", [b"\x04", b"\x01", b"\x84\x01"], ids=["2", "-1", "long-2"])
def test_an_invalid_union_branch_is_final(branch: bytes) -> None:
    event = _audit(ip=None)
    value = EventSerializer().serialize(event, TOPIC)
    assert value.endswith(b"\x00\x00")
    _expect_final(value[:-2] + branch + b"\x00", _decoder(AuditEvent), "ip: union branch")


def test_negative_lengths_are_final() -> None:
    event = _audit(ip="x")
    value = EventSerializer().serialize(event, TOPIC)
    assert value.endswith(b"\x02\x02x\x00")
    _expect_final(value[:-3] + b"\x03x\x00", _decoder(AuditEvent), "negative length -2")
    _expect_final(value[:-3] + b"\x83\x00x\x00", _decoder(AuditEvent), "negative length -2")


def test_truncations_trailing_bytes_and_bad_utf8_are_decode_errors() -> None:
    decoder = _decoder(AuditEvent)
    event = _audit(ip="10.0.0.1", details={"k": "v" * 80})
    value = EventSerializer().serialize(event, TOPIC)
    for size in range(10, len(value)):
        _expect_decode_error(value[:size], value, decoder)
    _expect_decode_error(value + b"\x00", value, decoder, "1 trailing bytes")
    bad_utf8 = value.replace(b"10.0.0.1", b"10.0.0\xff1")
    _expect_decode_error(bad_utf8, value, decoder, "UnicodeDecodeError")
    surrogate = value.replace(b"\x02k", b"\x06\xed\xa0\x80")  # UTF-8 of a lone surrogate
    _expect_decode_error(surrogate, value, decoder, "UnicodeDecodeError")
    huge_length = value.replace(b"\x02k", b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7fk")
    _expect_decode_error(huge_length, value, decoder)
    entity = _entity_value()
    at = 10 + 37 + 15 + 2  # event_id (1+36), event_type "entity_changed" (1+14), tenant "t"
    assert entity[at - 2 : at] == b"\x02t"
    far_future = entity[:at] + b"\xfe\xff\xff\xff\xff\xff\xff\xff\x7f" + entity[at + 8 :]
    _expect_decode_error(far_future, entity, _decoder(EntityChanged), "OverflowError")


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_corrupt_bytes_never_decode_where_fastavro_refuses(cls: type[Event]) -> None:
    """Whatever the compiled decoder returns, the careful path returns too; whatever it refuses
    for itself is a DecodeError; anything else is the careful path's call."""
    rng = random.Random(f"corrupt-{cls.__name__}")
    serializer, deserializer = EventSerializer(), EventDeserializer()
    decoder = _decoder(cls)
    outcomes = {"decoded": 0, "final": 0, "careful": 0}
    for _ in range(1500):
        corrupt = bytearray(serializer.serialize(_random_event(cls, rng), TOPIC))
        for _ in range(rng.choice([1, 1, 2, 3])):
            at = rng.randrange(10, len(corrupt))
            if rng.random() < 0.2:
                del corrupt[at]
            else:
                corrupt[at] = rng.choice([0, 1, 2, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        value = bytes(corrupt)
        try:
            careful: object = _careful(value, deserializer)
        except DecodeError as exc:
            careful = exc
        fast: object
        try:
            fast = decoder(value)
        except MalformedRecordError:
            outcomes["final"] += 1
            with pytest.raises(DecodeError):
                deserializer.deserialize(value, TOPIC)
            continue
        except Exception:
            outcomes["careful"] += 1
            fast = careful
        else:
            outcomes["decoded"] += 1
            assert _same(fast, careful)
        try:
            result: object = deserializer.deserialize(value, TOPIC)
        except DecodeError as exc:
            result = exc
        assert _same(result, fast)
    assert min(outcomes.values()) > 0, outcomes


# --- the instances ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_decoded_events_are_ordinary_frozen_instances(cls: type[Event]) -> None:
    assert _builder_class(cls) is not None  # the fast way to build is available
    event = _random_event(cls, random.Random(1))
    decoded = _decoder(cls)(EventSerializer().serialize(event, TOPIC))

    assert type(decoded) is cls
    assert decoded == event
    assert not hasattr(decoded, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.tenant_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del decoded.tenant_id
    assert pickle.loads(pickle.dumps(decoded)) == event  # noqa: S301 - our own bytes
    assert copy.copy(decoded) == copy.deepcopy(decoded) == event
    assert dataclasses.replace(decoded, tenant_id="x") == dataclasses.replace(event, tenant_id="x")
    assert repr(decoded) == repr(event)


# A synthetic event with every kind, for the ones no shipped schema uses yet.
_BIG_SYMBOLS = [f"S{i}" for i in range(70)]  # more than one varint byte holds
_BIG = StrEnum("_BIG", _BIG_SYMBOLS)  # type: ignore[misc]


def _probe_schema(name: str) -> dict[str, Any]:
    envelope = default_catalog().current("audit_event").schema["fields"][:6]
    return {
        "type": "record",
        "name": name,
        "namespace": "io.sidestream.tests",
        "fields": [
            *envelope,
            {"name": "flag", "type": "boolean"},
            {"name": "ratio", "type": "float"},
            {"name": "maybe_flag", "type": ["null", "boolean"], "default": None},
            {"name": "maybe_count", "type": ["long", "null"], "default": 0},
            {"name": "big", "type": {"type": "enum", "name": "Big", "symbols": _BIG_SYMBOLS}},
            {"name": "when", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
            {"name": "score", "type": ["null", "double"], "default": None},
        ],
    }


def _probe_codec(cls: type[Event], schema: dict[str, Any]) -> EventCodec:
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    version = SchemaVersion(
        subject=cls.SUBJECT,
        version=1,
        path=Path(f"{cls.SUBJECT}/v1.avsc"),
        schema=schema,
        canonical_form=canonical,
        fingerprint=fingerprint(schema),
    )
    return EventCodec(cls, version)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Probe(Event):
    SUBJECT: ClassVar[str] = "probe"
    KIND: ClassVar[str] = "probe"
    SCHEMA_VERSION: ClassVar[int] = 1

    flag: bool
    ratio: float
    maybe_flag: bool | None = None
    maybe_count: int | None = 0
    big: _BIG
    when: datetime | None
    score: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class _ProbeWithDict(Event):  # no slots: instances have a __dict__ (and so does Event's twin)
    SUBJECT: ClassVar[str] = "probe"
    KIND: ClassVar[str] = "probe"
    SCHEMA_VERSION: ClassVar[int] = 1

    flag: bool
    ratio: float
    maybe_flag: bool | None = None
    maybe_count: int | None = 0
    big: _BIG
    when: datetime | None
    score: float | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _ProbeWithPostInit(Event):
    SUBJECT: ClassVar[str] = "probe"
    KIND: ClassVar[str] = "probe"
    SCHEMA_VERSION: ClassVar[int] = 1
    seen: ClassVar[list[str]] = []

    flag: bool
    ratio: float
    maybe_flag: bool | None = None
    maybe_count: int | None = 0
    big: _BIG
    when: datetime | None
    score: float | None = None

    def __post_init__(self) -> None:
        self.seen.append(self.event_id)


@pytest.mark.parametrize(
    "cls", [_Probe, _ProbeWithDict, _ProbeWithPostInit], ids=["slots", "dict", "post-init"]
)
def test_every_kind_and_every_way_to_build(cls: type[Event]) -> None:
    schema = _probe_schema(cls.__name__.lstrip("_"))
    codec = _probe_codec(cls, schema)
    version = codec.current
    decoder = fast_decoder(codec, version.fingerprint, version.schema, 0)
    assert decoder is not None
    rng = random.Random(f"probe-{cls.__name__}")
    for _ in range(300):
        event = _random_event(cls, rng, codec)
        body = codec.encode(event, b"")
        decoded = decoder(body)
        assert type(decoded) is cls
        assert decoded == event == codec.decode(io.BytesIO(body), version.fingerprint, schema)
        assert codec.encode(decoded, b"") == body
    if cls is _ProbeWithPostInit:
        assert decoded.event_id in _ProbeWithPostInit.seen  # __init__ and __post_init__ ran
    with pytest.raises(dataclasses.FrozenInstanceError):
        decoded.tenant_id = "other"  # type: ignore[misc]


def test_probe_malformed_booleans_and_floats() -> None:
    codec = _probe_codec(_Probe, _probe_schema("Probe"))
    version = codec.current
    decoder = fast_decoder(codec, version.fingerprint, version.schema, 0)
    assert decoder is not None
    event = _random_event(_Probe, random.Random(2), codec)
    event = dataclasses.replace(event, flag=True, ratio=0.5)
    body = codec.encode(event, b"")
    at = body.index(b"\x01" + struct.pack("<f", 0.5))
    with pytest.raises(MalformedRecordError, match="probe record: flag: boolean byte 2"):
        decoder(body[:at] + b"\x02" + body[at + 1 :])
    with pytest.raises(struct.error):
        decoder(body[: at + 3])
    nan = body[: at + 1] + struct.pack("<f", math.nan) + body[at + 5 :]
    assert math.isnan(decoder(nan).ratio)  # type: ignore[attr-defined]


def test_the_twin_class_is_refused_when_layouts_differ() -> None:
    assert _builder_class(_ProbeWithDict) is None
    assert _builder_class(_Probe) is not None

    class Registering(Event):
        __slots__ = ()

        def __init_subclass__(cls, **kwargs: Any) -> None:
            super().__init_subclass__(**kwargs)

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Child(Registering):
        x: int

    assert _builder_class(Child) is None


def test_compiled_decoders_are_cached_per_codec() -> None:
    codec = _codecs()[AuditEvent]
    current = codec.current
    first = fast_decoder(codec, current.fingerprint, current.schema, 10)
    assert fast_decoder(codec, current.fingerprint, current.schema, 10) is first
    assert fast_decoder(codec, current.fingerprint, current.schema, 5) is not first
