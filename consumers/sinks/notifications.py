"""Notifications sink: requested notifications become ``pending`` rows for delivery."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from consumers.bulk import Table, insert_new_rows
from consumers.records import Record
from consumers.rows import SinkRows, binary_rows
from schemas import EventDeserializer, NotificationRequested
from schemas.rows import RowLayout

NOTIFICATIONS_TABLE = Table(
    "notifications",
    (
        ("notification_id", "uuid"),
        ("event_id", "uuid"),
        ("tenant_id", "text"),
        ("channel", "text"),
        ("recipient", "text"),
        ("template", "text"),
        ("params", "jsonb"),
        ("dedupe_key", "text"),
        ("requested_at", "timestamptz"),
        ("endpoint_id", "uuid"),
    ),
)


class NotificationFacts(NamedTuple):
    """What the runtime reads of a record besides its row."""

    occurred_at: datetime


#: Where each column of ``NOTIFICATIONS_TABLE`` comes from: the compiled row decoders' plan.
NOTIFICATION_ROWS = RowLayout(
    NotificationRequested,
    tuple(
        ("occurred_at" if name == "requested_at" else name, t)
        for name, t in NOTIFICATIONS_TABLE.columns
    ),
    facts_type=NotificationFacts,
)

#: Delivery workers LISTEN on this channel to wake up when new rows are committed.
NOTIFY_CHANNEL = "sidestream_notifications"


class NotificationsSink:
    """Writes :class:`NotificationRequested` records as pending notifications."""

    name = "notifications"
    event_type = NotificationRequested
    table = NOTIFICATIONS_TABLE
    """The table it lands rows in (operators and the worker registry show it)."""

    def row_decoder(self, deserializer: EventDeserializer) -> SinkRows:
        """Messages straight into rows (the runtime's fast path, see `consumers.rows`)."""
        return SinkRows(NOTIFICATION_ROWS, deserializer)

    @staticmethod
    def row(record: Record[NotificationRequested]) -> tuple[Any, ...]:
        """The ``notifications`` row of one decoded record, in column order."""
        event = record.event
        return (
            uuid.UUID(event.notification_id),
            uuid.UUID(event.event_id),
            event.tenant_id,
            event.channel.value,
            event.recipient,
            event.template,
            Jsonb(event.params),
            event.dedupe_key,
            event.occurred_at,
            None if event.endpoint_id is None else uuid.UUID(event.endpoint_id),
        )

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        rows = binary_rows(NOTIFICATION_ROWS, records, self.row)
        inserted = insert_new_rows(tx, NOTIFICATIONS_TABLE, rows)
        if inserted.count:
            # Delivered on commit only, so workers never wake up for rolled-back rows.
            tx.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        return inserted.count
