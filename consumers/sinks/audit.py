"""Audit sink: append-only ``audit_events``, partitioned by month."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from consumers.bulk import Table, insert_new_rows
from consumers.records import Record
from consumers.rows import SinkRows, binary_rows
from schemas import AuditEvent, EventDeserializer
from schemas.rows import OFFSET, PARTITION, RowLayout

AUDIT_TABLE = Table(
    "audit_events",
    (
        ("event_id", "uuid"),
        ("occurred_at", "timestamptz"),
        ("tenant_id", "text"),
        ("producer", "text"),
        ("actor_id", "text"),
        ("action", "text"),
        ("resource_type", "text"),
        ("resource_id", "text"),
        ("outcome", "text"),
        ("ip", "text"),
        ("details", "jsonb"),
        ("schema_version", "int4"),
        ("kafka_partition", "int4"),
        ("kafka_offset", "int8"),
    ),
)


class AuditFacts(NamedTuple):
    """What the sink reads of a record besides its row."""

    occurred_at: datetime


#: Where each column of ``AUDIT_TABLE`` comes from: the compiled row decoders' plan.
AUDIT_ROWS = RowLayout(
    AuditEvent,
    tuple(
        (PARTITION if name == "kafka_partition" else OFFSET if name == "kafka_offset" else name, t)
        for name, t in AUDIT_TABLE.columns
    ),
    facts_type=AuditFacts,
)

#: Months (around now) for which a dedicated partition is created on demand; events
#: outside this window go to the default partition.
_MONTHS_BEHIND, _MONTHS_AHEAD = 1, 3


def _month(moment: datetime) -> date:
    return date(moment.year, moment.month, 1)


def _months_of(records: Sequence[Record[Any]]) -> set[date]:
    """The months of the records' ``occurred_at``: on the writer thread, so one month
    (the usual batch) is found from the oldest and newest without a date per record."""
    moments = [r.event.occurred_at for r in records]
    if not moments:
        return set()
    first, last = _month(min(moments)), _month(max(moments))
    return {first} if first == last else {_month(moment) for moment in moments}


def _months_between(first: date, last: date) -> int:
    return (last.year - first.year) * 12 + last.month - first.month


class AuditSink:
    """Writes :class:`AuditEvent` records into ``audit_events``."""

    name = "audit"
    event_type = AuditEvent
    table = AUDIT_TABLE
    """The table it lands rows in (operators and the worker registry show it)."""

    def __init__(self) -> None:
        self._partitioned_months: set[date] = set()

    def row_decoder(self, deserializer: EventDeserializer) -> SinkRows:
        """Messages straight into rows (the runtime's fast path, see `consumers.rows`)."""
        return SinkRows(AUDIT_ROWS, deserializer)

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        self._ensure_partitions(tx, _months_of(records))
        rows = binary_rows(AUDIT_ROWS, records, self.row)
        return insert_new_rows(tx, AUDIT_TABLE, rows).count

    @staticmethod
    def row(record: Record[AuditEvent]) -> tuple[Any, ...]:
        """The ``audit_events`` row of one record, in ``AUDIT_TABLE`` column order."""
        event = record.event
        return (
            uuid.UUID(event.event_id),
            event.occurred_at,
            event.tenant_id,
            event.producer,
            event.actor_id,
            event.action,
            event.resource_type,
            event.resource_id,
            event.outcome.value,
            event.ip,
            Jsonb(event.details),
            event.schema_version,
            record.raw.partition,
            record.raw.offset,
        )

    def _ensure_partitions(self, tx: psycopg.Connection[Any], months: set[date]) -> None:
        missing = months - self._partitioned_months
        if not missing:
            return
        this_month = _month(datetime.now(UTC))
        for month in sorted(missing):
            distance = _months_between(this_month, month)
            if -_MONTHS_BEHIND <= distance <= _MONTHS_AHEAD:
                # Create this month and the ones ahead of it, once per process.
                tx.execute(
                    "SELECT sidestream_ensure_monthly_partitions('audit_events', %s, %s)",
                    (month, _MONTHS_AHEAD - distance + 1),
                )
            self._partitioned_months.add(month)
