"""Compiled row decoders (`schemas.rows`) against the careful path, row for row.

For every sink layout, every writer schema version of its event and both framings: random
events (edge values included) decode straight into the same row that the careful path builds
(decode into the event, then the sink's row tuple); corrupt values are never turned into a
row the careful path would refuse; `copy_row` writes what the compiled decoders write.
"""

from __future__ import annotations

import dataclasses
import json
import random
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from consumers.records import RawRecord, Record
from consumers.sinks.analytics import ANALYTICS_ROWS, AnalyticsSink
from consumers.sinks.audit import AUDIT_ROWS, AuditSink
from consumers.sinks.notifications import NOTIFICATION_ROWS, NotificationsSink
from schemas import (
    DecodeError,
    Event,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
    UnknownSchemaError,
    ValidationError,
    default_catalog,
)
from schemas.rows import (
    RowDecoder,
    RowLayout,
    compile_row_decoder,
    copy_row,
    facts_of,
    row_types,
)
from tests.schemas.test_schema_fast_decode import _random_event, _written_with

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
TOPIC = "events.rows"

SINKS: list[tuple[str, RowLayout, Callable[[Record[Any]], tuple[Any, ...]]]] = [
    ("audit", AUDIT_ROWS, AuditSink.row),
    ("analytics", ANALYTICS_ROWS, AnalyticsSink.row),
    ("notifications", NOTIFICATION_ROWS, NotificationsSink.row),
]
CASES = [
    (name, layout, row_of, version)
    for name, layout, row_of in SINKS
    for version in default_catalog().versions(layout.event_cls.SUBJECT)
]
IDS = [f"{name}-v{version.version}" for name, _, _, version in CASES]


def parse_row(types: list[str], row: bytes) -> tuple[Any, ...]:
    """A binary COPY row back into Python values, as the careful path's tuple holds them."""
    assert int.from_bytes(row[:2], "big") == len(types)
    values: list[Any] = []
    p = 2
    for pg_type in types:
        size = int.from_bytes(row[p : p + 4], "big", signed=True)
        p += 4
        if size == -1:
            values.append(None)
            continue
        raw, p = row[p : p + size], p + size
        if pg_type == "uuid":
            values.append(uuid.UUID(bytes=raw))
        elif pg_type == "timestamptz":
            micros = int.from_bytes(raw, "big", signed=True)
            values.append(_PG_EPOCH + timedelta(microseconds=micros))
        elif pg_type == "text":
            values.append(raw.decode())
        elif pg_type == "jsonb":
            assert raw[:1] == b"\x01"
            values.append(json.loads(raw[1:]))
        elif pg_type in ("int4", "int8"):
            values.append(int.from_bytes(raw, "big", signed=True))
        else:
            values.append(struct.unpack(">d", raw)[0])
    assert p == len(row), "trailing bytes after the last field"
    return tuple(values)


def plain(value: Any) -> Any:
    """A careful-path tuple value as `parse_row` gives it back."""
    if isinstance(value, Jsonb):
        return value.obj
    if isinstance(value, str) and type(value) is not str:  # a str enum
        return str(value.value)  # type: ignore[attr-defined]
    return value


def careful_row(
    row_of: Callable[[Record[Any]], tuple[Any, ...]], value: bytes, partition: int, offset: int
) -> tuple[Event, tuple[Any, ...]]:
    event = EventDeserializer().deserialize(value, TOPIC)
    raw = RawRecord(TOPIC, partition, offset, None, value, [], 0)
    return event, row_of(Record(raw, event))


def attempt(
    decoder: RowDecoder, value: bytes, partition: int, offset: int
) -> tuple[bytes, tuple[Any, ...]] | None:
    """The decoder's row and facts, or None where it refuses (the careful path then decides)."""
    try:
        return decoder(value, partition, offset)
    except Exception:
        return None


def _decoder(layout: RowLayout, value: bytes, deserializer: EventDeserializer) -> RowDecoder:
    decoder = compile_row_decoder(layout, deserializer.writer_schema(value, TOPIC))
    assert decoder is not None
    return decoder


@pytest.mark.parametrize(("name", "layout", "row_of", "version"), CASES, ids=IDS)
def test_random_events_give_the_careful_paths_row(
    name: str, layout: RowLayout, row_of: Any, version: Any
) -> None:
    rng = random.Random(f"rows-{name}-{version.version}")
    deserializer = EventDeserializer()
    types = row_types(layout)
    decoder: RowDecoder | None = None
    fast = 0
    for i in range(400):
        value = _written_with(version, _random_event(layout.event_cls, rng))
        decoder = decoder or _decoder(layout, value, deserializer)
        partition, offset = rng.randrange(0, 64), rng.randrange(0, 2**40)
        event, expected = careful_row(row_of, value, partition, offset)
        got = attempt(decoder, value, partition, offset)
        if got is None:
            continue  # the careful path takes it (a long string, say): allowed, counted below
        row, facts = got
        fast += 1
        assert parse_row(types, row) == tuple(plain(v) for v in expected), f"event {i}"
        assert facts == facts_of(layout, event)
        assert type(facts) is layout.facts_type
        assert copy_row(types, expected) == row or "jsonb" in types  # JSON spacing may differ
        assert parse_row(types, copy_row(types, expected)) == parse_row(types, row)
    # Random events include strings over 4 KiB and other rarities: most still go fast.
    assert fast >= 300


@pytest.mark.parametrize(("name", "layout", "row_of"), SINKS, ids=[s[0] for s in SINKS])
def test_confluent_framing(name: str, layout: RowLayout, row_of: Any) -> None:
    registry = InMemorySchemaRegistry()
    serializer = EventSerializer(schema_registry=registry)
    deserializer = EventDeserializer(schema_registry=registry)
    rng = random.Random(f"rows-confluent-{name}")
    types = row_types(layout)
    value = serializer.serialize(_random_event(layout.event_cls, rng), TOPIC)
    decoder = _decoder(layout, value, deserializer)
    for _ in range(50):
        value = serializer.serialize(_random_event(layout.event_cls, rng), TOPIC)
        event = deserializer.deserialize(value, TOPIC)
        expected = row_of(Record(RawRecord(TOPIC, 1, 2, None, value, [], 0), event))
        got = attempt(decoder, value, 1, 2)
        if got is not None:
            assert parse_row(types, got[0]) == tuple(plain(v) for v in expected)


def _careful_verdict(row_of: Any, value: bytes) -> tuple[Any, ...] | None:
    try:
        return careful_row(row_of, value, 0, 0)[1]
    except (DecodeError, UnknownSchemaError, ValidationError, ValueError):
        return None


@pytest.mark.parametrize(("name", "layout", "row_of"), SINKS, ids=[s[0] for s in SINKS])
def test_corrupt_values_never_become_rows_the_careful_path_refuses(
    name: str, layout: RowLayout, row_of: Any
) -> None:
    rng = random.Random(f"rows-corrupt-{name}")
    serializer, deserializer = EventSerializer(), EventDeserializer()
    types = row_types(layout)
    decoder: RowDecoder | None = None
    for _ in range(1500):
        value = bytearray(serializer.serialize(_random_event(layout.event_cls, rng), TOPIC))
        decoder = decoder or _decoder(layout, bytes(value), deserializer)
        roll = rng.random()
        if roll < 0.4:
            for _ in range(rng.randrange(1, 4)):
                value[rng.randrange(10, len(value))] = rng.randrange(256)
        elif roll < 0.7:
            del value[rng.randrange(10, len(value)) :]
        else:
            value += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        corrupt = bytes(value)
        got = attempt(decoder, corrupt, 0, 0)
        if got is None:
            continue  # refused: the careful path decides
        row = got[0]
        expected = _careful_verdict(row_of, corrupt)
        assert expected is not None, (
            f"fast path accepted what the careful path refuses: {corrupt!r}"
        )
        assert parse_row(types, row) == tuple(plain(v) for v in expected)


def test_unusual_values_take_the_careful_path() -> None:
    serializer, deserializer = EventSerializer(), EventDeserializer()
    base = _random_event(AUDIT_ROWS.event_cls, random.Random(1))
    value = serializer.serialize(base, TOPIC)
    decoder = _decoder(AUDIT_ROWS, value, deserializer)
    assert decoder(value, 0, 0)  # a valid, ordinary value goes fast
    current = default_catalog().current("audit_event")
    changes: list[dict[str, Any]] = [
        {"event_id": "{" + str(uuid.uuid4()) + "}"},  # uuid.UUID() takes it, the fast path not
        {"actor_id": "x" * 5000},  # a string over 4 KiB
    ]
    for change in changes:
        odd = _written_with(current, dataclasses.replace(base, **change))  # not validated
        with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal sends it the careful way
            decoder(odd, 0, 0)


def test_a_foreign_subject_gets_no_row_decoder() -> None:
    value = EventSerializer().serialize(
        _random_event(ANALYTICS_ROWS.event_cls, random.Random(2)), TOPIC
    )
    assert compile_row_decoder(AUDIT_ROWS, EventDeserializer().writer_schema(value)) is None


def test_copy_row_encodes_nulls_and_every_type() -> None:
    types = ["uuid", "timestamptz", "text", "jsonb", "int4", "int8", "float8", "text"]
    moment = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    values = (uuid.UUID(int=7), moment, "é", Jsonb({"a": "b"}), -3, 2**40, 1.5, None)
    assert parse_row(types, copy_row(types, values)) == (
        uuid.UUID(int=7),
        moment,
        "é",
        {"a": "b"},
        -3,
        2**40,
        1.5,
        None,
    )
