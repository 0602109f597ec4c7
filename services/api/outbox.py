"""The transactional outbox for ``psycopg.AsyncConnection``.

:class:`producers.Outbox` takes a synchronous connection; the API runs on an
``AsyncConnectionPool``. :class:`AsyncOutbox` writes exactly the row ``Outbox.add`` writes
(same columns, same serializer, same header order: ``traceparent`` first), built from the
public pieces (``EventSerializer``, ``schemas.trace_headers``), so the relay publishes it
unchanged; ``tests/services/api/test_outbox.py`` checks the two byte for byte. If
``producers`` grows an async ``add``, this module shrinks to a call of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from producers import OutboxError
from schemas import Event, EventSerializer, trace_headers

__all__ = ["AsyncOutbox", "OutboxEntry"]

_COLUMNS = ("event_id", "event_type", "topic", "key", "value", "header_names", "header_values")

#: One event to add: the event, its topic, and extra headers (name, value).
OutboxEntry = tuple[Event, str, Sequence[tuple[str, bytes | str]]]


class AsyncOutbox:
    """Adds events to the ``outbox`` table inside the caller's async transaction.

    ``schema`` qualifies the table (default: the connection's search path).
    """

    def __init__(
        self, *, serializer: EventSerializer | None = None, schema: str | None = None
    ) -> None:
        self._serializer = serializer or EventSerializer()
        self._table = sql.Identifier(schema, "outbox") if schema else sql.Identifier("outbox")
        self._row = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)))

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
        trace = trace_headers(traceparent)
        params: list[object] = []
        for event, topic, headers in entries:
            value = self._serializer.serialize(event, topic)  # validates first
            names: list[str] = []
            values: list[bytes] = []
            for name, item in (*trace, *headers):
                names.append(name)
                values.append(item.encode() if isinstance(item, str) else item)
            params.extend(
                (event.event_id, event.event_type, topic, event.key, value, names, values)
            )
        query = sql.SQL("INSERT INTO {} ({}) VALUES {} RETURNING id").format(
            self._table,
            sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            sql.SQL(", ").join([self._row] * len(entries)),
        )
        cursor = await conn.execute(query, params)
        return [int(row[0]) for row in await cursor.fetchall()]
