"""Notifications sink: requested notifications become ``pending`` rows for delivery."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from consumers.bulk import Table, insert_new_rows
from consumers.records import Record
from schemas import NotificationRequested

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

#: Delivery workers LISTEN on this channel to wake up when new rows are committed.
NOTIFY_CHANNEL = "sidestream_notifications"


class NotificationsSink:
    """Writes :class:`NotificationRequested` records as pending notifications."""

    name = "notifications"
    event_type = NotificationRequested
    table = NOTIFICATIONS_TABLE
    """The table it lands rows in (operators and the worker registry show it)."""

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        rows = []
        for record in records:
            event: NotificationRequested = record.event
            rows.append(
                (
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
            )
        inserted = insert_new_rows(tx, NOTIFICATIONS_TABLE, rows)
        if inserted.count:
            # Delivered on commit only, so workers never wake up for rolled-back rows.
            tx.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
        return inserted.count
