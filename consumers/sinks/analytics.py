"""Analytics sink: raw ``analytics_events`` plus the ``analytics_hourly`` rollup.

The rollup is updated in the same transaction as the raw rows and only from rows that
were new, so a replayed batch changes neither table.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from consumers.bulk import Table, insert_new_rows
from consumers.records import Record
from schemas import AnalyticsEvent

ANALYTICS_TABLE = Table(
    "analytics_events",
    (
        ("event_id", "uuid"),
        ("occurred_at", "timestamptz"),
        ("tenant_id", "text"),
        ("producer", "text"),
        ("name", "text"),
        ("user_id", "text"),
        ("session_id", "text"),
        ("properties", "jsonb"),
        ("value", "float8"),
        ("platform", "text"),
        ("schema_version", "int4"),
        ("kafka_partition", "int4"),
        ("kafka_offset", "int8"),
    ),
)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class AnalyticsSink:
    """Writes :class:`AnalyticsEvent` records and keeps the hourly rollup exact."""

    name = "analytics"
    event_type = AnalyticsEvent
    table = ANALYTICS_TABLE
    """The table it lands rows in (operators and the worker registry show it)."""

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        rows = []
        for record in records:
            event: AnalyticsEvent = record.event
            rows.append(
                (
                    uuid.UUID(event.event_id),
                    event.occurred_at,
                    event.tenant_id,
                    event.producer,
                    event.name,
                    event.user_id,
                    event.session_id,
                    Jsonb(event.properties),
                    event.value,
                    event.platform,
                    event.schema_version,
                    record.raw.partition,
                    record.raw.offset,
                )
            )
        inserted = insert_new_rows(tx, ANALYTICS_TABLE, rows)
        totals: dict[tuple[str, str, datetime], list[float]] = defaultdict(lambda: [0, 0.0])
        for row, record in zip(rows, records, strict=True):
            if inserted.includes(row[0]):
                event = record.event
                bucket = totals[(event.tenant_id, event.name, _hour(event.occurred_at))]
                bucket[0] += 1
                bucket[1] += event.value or 0.0
        if totals:
            # Sorted keys: concurrent workers lock rollup rows in the same order, so they
            # wait for each other instead of deadlocking.
            keys = sorted(totals)
            tx.execute(
                """
                INSERT INTO analytics_hourly AS h (tenant_id, name, hour, events, value_sum)
                SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[],
                                     %s::bigint[], %s::float8[])
                ON CONFLICT (tenant_id, name, hour) DO UPDATE
                    SET events = h.events + EXCLUDED.events,
                        value_sum = h.value_sum + EXCLUDED.value_sum
                """,
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [int(totals[k][0]) for k in keys],
                    [totals[k][1] for k in keys],
                ),
            )
        return inserted.count
