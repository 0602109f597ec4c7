"""The sinks' fast path (`consumers.rows`) against today's path, through real Kafka and Postgres.

The same messages — random events of every schema version, plus poison — are written twice:
by the sink as the runtime feeds it (rows straight from the Avro bytes where the row decoder
takes them, decoded events for the rest) and the way every sink wrote before (events → row
tuples → psycopg's binary COPY). The tables must hold the same rows.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message
from psycopg import sql

from consumers import CONSUMER_MIGRATIONS
from consumers.bulk import Table, insert_new_rows
from consumers.records import RawRecord, Record, RowRecord, headers_of
from consumers.sinks import AnalyticsSink, AuditSink, NotificationsSink
from consumers.sinks.analytics import ANALYTICS_TABLE
from consumers.sinks.audit import AUDIT_TABLE
from consumers.sinks.notifications import NOTIFICATIONS_TABLE
from runtime import Settings
from runtime.migrations import migrate
from schemas import DecodeError, EventDeserializer, UnknownSchemaError, default_catalog
from tests.consumers.support import produce, read_all
from tests.schemas.test_schema_fast_decode import _random_event, _written_with

SINKS: list[tuple[Any, Table]] = [
    (AuditSink(), AUDIT_TABLE),
    (AnalyticsSink(), ANALYTICS_TABLE),
    (NotificationsSink(), NOTIFICATIONS_TABLE),
]


@pytest.fixture
def reference_schema(
    pg_conn: psycopg.Connection[Any], unique: Callable[[str], str]
) -> Iterator[str]:
    name = unique("ref")
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=name)
    yield name
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _storable(event: Any, i: int) -> Any:
    """`event` with what the tables' checks refuse (empty names, duplicate dedupe keys) fixed."""
    changes: dict[str, Any] = {
        name: "x"
        for name in ("tenant_id", "action", "name", "recipient")
        if getattr(event, name, None) == ""
    }
    if getattr(event, "dedupe_key", None) is not None:
        changes["dedupe_key"] = f"{event.dedupe_key}-{i}"
    return dataclasses.replace(event, **changes)


def _careful(message: Message, deserializer: EventDeserializer) -> Record[Any] | None:
    raw = RawRecord(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
        headers_of(message),
        message.timestamp()[1],
    )
    try:
        return Record(raw, deserializer.deserialize(message.value() or b"", raw.topic))
    except (DecodeError, UnknownSchemaError):
        return None  # poison: the runtime dead-letters it


def _rows(conn: psycopg.Connection[Any], schema: str, table: Table) -> list[tuple[Any, ...]]:
    columns = sql.SQL(", ").join(map(sql.Identifier, table.column_names))
    return conn.execute(
        sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
            columns, sql.Identifier(schema), sql.Identifier(table.name), sql.Identifier(table.key)
        )
    ).fetchall()


@pytest.mark.parametrize(("sink", "table"), SINKS, ids=[s.name for s, _ in SINKS])
def test_fast_rows_equal_todays_rows(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    reference_schema: str,
    pg_conn: psycopg.Connection[Any],
    sink: Any,
    table: Table,
) -> None:
    rng = random.Random(f"sink-rows-{sink.name}")
    versions = default_catalog().versions(sink.event_type.SUBJECT)
    values = [
        _written_with(rng.choice(versions), _storable(_random_event(sink.event_type, rng), i))
        for i in range(600)
    ]
    poison = [b"\xc3\x01" + bytes(8) + b"\x00", values[0][:-3], b"not avro"]
    produce(stack_settings, topic, [*values, *poison])
    messages = read_all(stack_settings, topic, expect=len(values) + len(poison))
    assert len(messages) == len(values) + len(poison)

    deserializer = EventDeserializer()
    fast_rows = sink.row_decoder(deserializer)
    fed: list[Record[Any]] = []  # what the runtime hands the sink
    for message in messages:
        record = fast_rows(message) or _careful(message, deserializer)
        if record is not None:
            fed.append(record)
    reference = [r for m in messages if (r := _careful(m, deserializer)) is not None]
    fast = sum(1 for r in fed if type(r) is RowRecord)
    assert len(fed) == len(reference) == len(values)
    assert fast >= len(values) * 0.75  # the rest: first of each schema, over-long strings, ...

    with psycopg.connect(pg_conn.info.dsn, autocommit=False) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(sink_schema)))
        assert sink.write(fed, conn) == len(values)
        conn.commit()
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(reference_schema)))
        inserted = insert_new_rows(conn, table, [sink.row(r) for r in reference])
        assert inserted.count == len(values)
        conn.commit()

    assert _rows(pg_conn, sink_schema, table) == _rows(pg_conn, reference_schema, table)
    if sink.name == "analytics":
        hourly = pg_conn.execute(
            sql.SQL(
                "SELECT tenant_id, name, hour, events, value_sum FROM {}.analytics_hourly "
                "ORDER BY 1, 2, 3"
            ).format(sql.Identifier(sink_schema))
        ).fetchall()
        expected = pg_conn.execute(
            sql.SQL(
                "SELECT tenant_id, name, date_trunc('hour', occurred_at), count(*), "
                "sum(coalesce(value, 0)) FROM {}.analytics_events GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ).format(sql.Identifier(reference_schema))
        ).fetchall()
        assert [h[:4] for h in hourly] == [e[:4] for e in expected]
        assert all(
            h[4] == pytest.approx(e[4], nan_ok=True) for h, e in zip(hourly, expected, strict=True)
        )


def test_a_rejected_row_is_dead_lettered_with_its_headers_read_lazily(
    stack_settings: Settings, topic: str
) -> None:
    produce(
        stack_settings,
        topic,
        [
            _written_with(
                default_catalog().current("audit_event"),
                _random_event(AuditSink.event_type, random.Random(4)),
            )
        ]
        * 2,
    )
    messages = read_all(stack_settings, topic, expect=2)
    rows = AuditSink().row_decoder(EventDeserializer())
    assert rows(messages[0]) is None  # first sight of the schema: the careful path
    record = rows(messages[1])
    assert isinstance(record, RowRecord)
    assert record.raw.key == messages[1].key()
    assert record.raw.value == messages[1].value()
    assert record.raw.headers == headers_of(messages[1])
    assert record.raw.position == f"{topic}[{messages[1].partition()}]@{messages[1].offset()}"
