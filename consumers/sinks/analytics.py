"""Analytics sink: raw ``analytics_events`` plus the ``analytics_hourly`` rollup.

The rollup is updated in the same transaction as the raw rows and only from rows that
were new, so a replayed batch changes neither table.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from consumers.bulk import Table, insert_new_rows
from consumers.records import Record, RowRecord
from consumers.rows import SinkRows, binary_rows
from schemas import AnalyticsEvent, EventDeserializer
from schemas.rows import OFFSET, PARTITION, RowLayout

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


class AnalyticsFacts(NamedTuple):
    """What the sink reads of a record besides its row: the rollup's inputs."""

    occurred_at: datetime
    tenant_id: str
    name: str
    value: float | None


#: Where each column of ``ANALYTICS_TABLE`` comes from: the compiled row decoders' plan.
ANALYTICS_ROWS = RowLayout(
    AnalyticsEvent,
    tuple(
        (PARTITION if name == "kafka_partition" else OFFSET if name == "kafka_offset" else name, t)
        for name, t in ANALYTICS_TABLE.columns
    ),
    facts=("tenant_id", "name", "value"),
    facts_type=AnalyticsFacts,
)


def _event_id(record: Record[Any]) -> uuid.UUID:
    """The ``event_id`` of either kind of record (a row starts with it: count, length, id)."""
    if type(record) is RowRecord:
        return uuid.UUID(bytes=record.row[6:22])
    return uuid.UUID(record.event.event_id)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


class AnalyticsSink:
    """Writes :class:`AnalyticsEvent` records and keeps the hourly rollup exact."""

    name = "analytics"
    event_type = AnalyticsEvent
    table = ANALYTICS_TABLE
    """The table it lands rows in (operators and the worker registry show it)."""

    def row_decoder(self, deserializer: EventDeserializer) -> SinkRows:
        """Messages straight into rows (the runtime's fast path, see `consumers.rows`)."""
        return SinkRows(ANALYTICS_ROWS, deserializer)

    @staticmethod
    def row(record: Record[AnalyticsEvent]) -> tuple[Any, ...]:
        """The ``analytics_events`` row of one decoded record, in column order."""
        event = record.event
        return (
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

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        inserted = insert_new_rows(
            tx, ANALYTICS_TABLE, binary_rows(ANALYTICS_ROWS, records, self.row)
        )
        totals: dict[tuple[str, str, datetime], list[float]] = defaultdict(lambda: [0, 0.0])
        for record in records:
            if inserted.keys is None or _event_id(record) in inserted.keys:
                facts = record.event  # the event, or the row decoder's facts: same names
                bucket = totals[(facts.tenant_id, facts.name, _hour(facts.occurred_at))]
                bucket[0] += 1
                bucket[1] += facts.value or 0.0
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
