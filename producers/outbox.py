"""The transactional outbox: write an event in the same Postgres transaction as the change
it describes; `producers.relay.OutboxRelay` publishes it once that transaction commits.

The event is validated and encoded by :meth:`Outbox.add`, inside the caller's transaction:
a bad event raises `schemas.ValidationError` there (and the caller's transaction decides
what to do), never later in the relay. Rolling the transaction back drops the event with
the business rows; committing it makes the event's delivery certain (at least once;
consumers dedupe on ``event_id``). A statement-level trigger sends ``NOTIFY`` on insert,
delivered on commit, so an idle relay wakes at once.

Create the table with ``runtime.migrations.migrate(conn, [OUTBOX_MIGRATIONS], schema=...)``.

:class:`Outbox` takes a synchronous connection, :class:`AsyncOutbox` an
``AsyncConnection`` (the API's pool); both write the same row, built in one place.

Order: rows of one (topic, key) are published in ``id`` order. Two transactions that add
events for the same key concurrently may commit in the other order than their ids; the
relay then publishes them in the order it sees them committed (see `producers.relay`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from producers._headers import Headers, merge_headers
from producers.errors import OutboxError
from runtime.migrations import MigrationSource
from schemas import Event, EventSerializer
from schemas.topics import topic_for

__all__ = ["NOTIFY_CHANNEL", "OUTBOX_MIGRATIONS", "AsyncOutbox", "Outbox", "OutboxEntry"]

OUTBOX_MIGRATIONS = MigrationSource("producers")
NOTIFY_CHANNEL = "sidestream_outbox"
"""Channel of the insert trigger's ``NOTIFY``; the payload is the outbox's schema."""

_COLUMNS = ("event_id", "event_type", "topic", "key", "value", "header_names", "header_values")

#: One event for :meth:`AsyncOutbox.add_many`: the event, its topic, extra headers.
OutboxEntry = tuple[Event, str, Sequence[tuple[str, bytes | str]]]


def outbox_table(schema: str | None) -> sql.Composable:
    """``outbox``, qualified with `schema` when given (else found on the search path)."""
    return sql.Identifier(schema, "outbox") if schema else sql.Identifier("outbox")


class Outbox:
    """Adds events to the ``outbox`` table within the caller's transactions.

    `schema` qualifies the table (default: the connection's search path, which
    ``runtime.clients`` sets to the configured schema). `serializer` chooses the wire
    format, exactly as for `EventPublisher`. Safe to share between threads.
    """

    def __init__(
        self, *, serializer: EventSerializer | None = None, schema: str | None = None
    ) -> None:
        self._serializer = serializer or EventSerializer()
        self._insert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
            outbox_table(schema),
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
        )

    def add(
        self,
        conn: psycopg.Connection[Any],
        event: Event,
        *,
        topic: str | None = None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        traceparent: str | None = None,
    ) -> int:
        """Insert `event` into the outbox in `conn`'s current transaction; returns its id.

        `topic` defaults to the event type's topic, `key` to ``event.key``; `traceparent`
        becomes the W3C ``traceparent`` header.

        Raises:
            schemas.ValidationError: the event does not match its schema (nothing written).
            OutboxError: `conn` is in autocommit mode outside a transaction block, where
                the event would be committed on its own.
        """
        _require_transaction(conn)
        row = conn.execute(
            self._insert, _row(self._serializer, event, topic, key, headers, traceparent)
        )
        found = row.fetchone()
        assert found is not None  # INSERT ... RETURNING always returns the row
        return int(found[0])

    def add_many(
        self,
        conn: psycopg.Connection[Any],
        events: Iterable[Event],
        *,
        topic: str | None = None,
        traceparent: str | None = None,
    ) -> int:
        """Insert many events (each with its default key) in one round trip; returns how
        many. Every event is validated before anything is written."""
        _require_transaction(conn)
        rows = [_row(self._serializer, event, topic, None, None, traceparent) for event in events]
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(self._insert, rows)
        return len(rows)


class AsyncOutbox:
    """Adds events to the ``outbox`` table inside the caller's async transaction: the rows
    :class:`Outbox` writes (same columns, serializer and header order, ``traceparent``
    first), so the relay publishes them unchanged.

    ``schema`` qualifies the table (default: the connection's search path).
    """

    def __init__(
        self, *, serializer: EventSerializer | None = None, schema: str | None = None
    ) -> None:
        self._serializer = serializer or EventSerializer()
        self._table = outbox_table(schema)
        self._values = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)))

    async def add_many(
        self,
        conn: psycopg.AsyncConnection[Any],
        entries: Sequence[OutboxEntry],
        *,
        traceparent: str | None = None,
    ) -> list[int]:
        """Insert ``entries`` (in order, one statement) in ``conn``'s current transaction;
        returns their outbox ids.

        Every event is validated and encoded before anything is written. Each keeps its
        default key (``event.key``).

        Raises:
            schemas.ValidationError: an event does not match its schema (nothing written).
            ValueError: ``traceparent`` is malformed.
            OutboxError: ``conn`` is in autocommit mode outside a transaction block.
        """
        if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
            raise OutboxError(
                "AsyncOutbox.add_many needs a transaction: wrap it and the business "
                "writes in `async with conn.transaction():`"
            )
        if not entries:
            return []
        params: list[object] = []
        for event, topic, headers in entries:
            params.extend(_row(self._serializer, event, topic, None, headers, traceparent))
        query = sql.SQL("INSERT INTO {} ({}) VALUES {} RETURNING id").format(
            self._table,
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join([self._values] * len(entries)),
        )
        cursor = await conn.execute(query, params)
        return [int(row[0]) for row in await cursor.fetchall()]


def _row(
    serializer: EventSerializer,
    event: Event,
    topic: str | None,
    key: bytes | str | None,
    headers: Headers | None,
    traceparent: str | None,
) -> Sequence[object]:
    """One outbox row's values, in ``_COLUMNS`` order; validates the event first."""
    if topic is None:
        topic = topic_for(type(event)) if isinstance(event, Event) else ""
    value = serializer.serialize(event, topic)  # validates first
    if key is None:
        key = event.key
    elif isinstance(key, str):
        key = key.encode()
    names: list[str] = []
    values: list[bytes | None] = []
    if traceparent is not None or headers is not None:
        for name, item in merge_headers(traceparent, headers):
            names.append(name)
            values.append(item.encode() if isinstance(item, str) else item)
    return (event.event_id, event.event_type, topic, key, value, names, values)


def _require_transaction(conn: psycopg.Connection[Any]) -> None:
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        raise OutboxError(
            "Outbox.add needs a transaction: wrap it and the business writes in "
            "`with conn.transaction():` (or use a connection without autocommit)"
        )
