"""Lag: how far each consumer group is behind, in records and in time.

Per group, topic and partition: the position stored in Postgres (the workers' source of
truth) and the one committed in Kafka, the end offset — both as the broker reports it
and as confirmed by reading (some brokers report it short) — the lag in records, and the
event-time lag: how long the oldest record not yet processed has been waiting (now minus
the timestamp of the message at the committed position; 0 when caught up).

A stored position outside the log — past its confirmed end (a recreated topic, a
restarted in-memory broker) or before its start (retention passed it) — is reported as
such (:attr:`PartitionLag.out_of_range`), never clamped to a lag of 0: the workers refuse
those partitions (or reset them, as their policy says).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from consumers.log_range import OffsetOutOfRange
from consumers.ops.errors import BrokerError, TopicNotFoundError
from consumers.ops.groups import GroupActivity, GroupInspector
from consumers.ops.positions import groups_in, stored_offsets
from consumers.ops.reader import EndOffsets, Key, TopicReader

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of one group."""

    topic: str
    partition: int
    postgres_offset: int | None  # None: claimed but nothing committed (or never claimed)
    kafka_offset: int | None  # None: nothing committed in Kafka
    ends: EndOffsets
    position: int  # what the lag counts from: Postgres, else Kafka, else the start
    oldest_pending_ms: int | None  # timestamp of the message at ``position``, if behind
    out_of_range: OffsetOutOfRange | None = None  # the stored position is outside the log

    @property
    def lag(self) -> int:
        """Records behind; for a position past the end, how far past (negative)."""
        if self.out_of_range is not None and self.out_of_range.past_end:
            return self.ends.end - self.out_of_range.stored
        return max(0, self.ends.end - self.position)

    def event_time_lag_s(self, now: datetime) -> float | None:
        """Seconds the oldest pending record has waited (0 caught up; None: unknown)."""
        if self.lag <= 0:
            return 0.0
        if self.oldest_pending_ms is None:
            return None
        return max(0.0, now.timestamp() - self.oldest_pending_ms / 1000)


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    activity: GroupActivity
    partitions: tuple[PartitionLag, ...]
    missing_topics: tuple[str, ...] = ()  # in Postgres but no longer on the broker
    kafka_error: str | None = None  # Kafka's committed offsets could not be read

    @property
    def lag(self) -> int:
        return sum(max(0, p.lag) for p in self.partitions)

    @property
    def out_of_range(self) -> tuple[OffsetOutOfRange, ...]:
        return tuple(p.out_of_range for p in self.partitions if p.out_of_range is not None)


@dataclass(frozen=True, slots=True)
class LagReport:
    schema: str
    taken_at: datetime
    groups: tuple[GroupLag, ...]

    @property
    def out_of_range(self) -> tuple[tuple[str, OffsetOutOfRange], ...]:
        """(group, condition) of every stored position outside its log."""
        return tuple((g.group, c) for g in self.groups for c in g.out_of_range)

    @property
    def short_watermarks(self) -> bool:
        return any(p.ends.short for g in self.groups for p in g.partitions)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for ``sidestream lag --json``)."""
        return {
            "schema": self.schema,
            "taken_at": self.taken_at.isoformat(),
            "groups": [
                {
                    "group": g.group,
                    "state": g.activity.state,
                    "activity": g.activity.activity.value,
                    "members": g.activity.members,
                    "lag": g.lag,
                    "missing_topics": list(g.missing_topics),
                    "kafka_error": g.kafka_error,
                    "partitions": [
                        {
                            "topic": p.topic,
                            "partition": p.partition,
                            "postgres_offset": p.postgres_offset,
                            "kafka_offset": p.kafka_offset,
                            "low_offset": p.ends.low,
                            "end_offset": p.ends.end,
                            "reported_end_offset": p.ends.reported,
                            "end_verified": p.ends.verified,
                            "lag": p.lag,
                            "out_of_range": p.out_of_range.where if p.out_of_range else None,
                            "event_time_lag_s": p.event_time_lag_s(self.taken_at),
                        }
                        for p in g.partitions
                    ],
                }
                for g in self.groups
            ],
        }


def measure_lag(
    *,
    conn: psycopg.Connection[Any],
    schema: str,
    reader: TopicReader,
    groups: GroupInspector,
    group_ids: Sequence[str] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> LagReport:
    """Lag of ``group_ids`` (default: every group with offsets in ``schema``)."""
    wanted = list(group_ids) if group_ids else groups_in(conn, schema)
    stored = {group: stored_offsets(conn, schema, group) for group in wanted}

    # Partitions of every topic any group reads; each partition's end read once.
    partitions: dict[str, list[int]] = {}
    missing: set[str] = set()
    for topic in sorted({t for offsets in stored.values() for t, _ in offsets}):
        try:
            partitions[topic] = reader.partitions(topic)
        except TopicNotFoundError:
            missing.add(topic)
    ends = reader.ends([(t, p) for t, parts in partitions.items() for p in parts])
    taken_at = now()

    report = []
    for group in wanted:
        kafka_error = None
        try:
            committed = groups.committed(group)
        except BrokerError as exc:
            committed, kafka_error = {}, exc.error
        topics = sorted({t for t, _ in stored[group]} - missing)
        keys = [(t, p) for t in topics for p in partitions[t]]
        positions: dict[Key, int] = {}
        outside: dict[Key, OffsetOutOfRange] = {}
        for key in keys:
            position = stored[group].get(key)
            if position is None:
                position = committed.get(key, ends[key].low)
            if not ends[key].low <= position <= ends[key].end:
                outside[key] = OffsetOutOfRange(*key, position, ends[key].low, ends[key].end)
            positions[key] = min(max(position, ends[key].low), ends[key].end)
        peeks = reader.peek({k: o for k, o in positions.items() if o < ends[k].end})
        report.append(
            GroupLag(
                group=group,
                activity=groups.activity(group),
                partitions=tuple(
                    PartitionLag(
                        topic=key[0],
                        partition=key[1],
                        postgres_offset=stored[group].get(key),
                        kafka_offset=committed.get(key),
                        ends=ends[key],
                        position=positions[key],
                        oldest_pending_ms=(
                            peek.timestamp_ms if (peek := peeks.get(key)) is not None else None
                        ),
                        out_of_range=outside.get(key),
                    )
                    for key in keys
                ),
                missing_topics=tuple(sorted({t for t, _ in stored[group]} & missing)),
                kafka_error=kafka_error,
            )
        )
    return LagReport(schema=schema, taken_at=taken_at, groups=tuple(report))
