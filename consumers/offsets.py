"""Consumer offsets kept in Postgres, next to the rows, with per-partition fencing.

Order of a commit (one Postgres transaction): the sink writes its rows, then
:meth:`PostgresOffsets.commit` moves each partition's ``next_offset`` — but only where the
row still carries the generation this worker claimed when the partition was assigned. A
worker that lost the partition in a rebalance finds a newer generation, updates nothing,
and gets :class:`Fenced`; its transaction rolls back with the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from consumers.errors import ConsumerError

TopicPartitionKey = tuple[str, int]


class Fenced(ConsumerError):  # noqa: N818 - reads as "raise Fenced(...)"
    """Another worker claimed these partitions since we did: our commit must not land."""

    def __init__(self, group_id: str, partitions: Iterable[TopicPartitionKey]) -> None:
        self.group_id = group_id
        self.partitions = sorted(partitions)
        names = ", ".join(f"{t}[{p}]" for t, p in self.partitions)
        super().__init__(f"group {group_id}: fenced on {names}")


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker got when it claimed a partition."""

    next_offset: int | None  # None: nothing committed in Postgres yet
    generation: int


class PostgresOffsets:
    """The ``consumer_offsets`` table for one consumer group."""

    def __init__(self, group_id: str, *, owner: str) -> None:
        self.group_id = group_id
        self.owner = owner

    def claim(
        self, conn: psycopg.Connection[Any], partitions: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, Claim]:
        """Take ownership of ``partitions``: bump their generation, return stored offsets."""
        wanted = list(partitions)
        if not wanted:
            return {}
        rows = conn.execute(
            """
            INSERT INTO consumer_offsets AS o (group_id, topic, partition, generation, owner)
            SELECT %s, t, p, 1, %s FROM unnest(%s::text[], %s::int[]) AS v(t, p)
            ON CONFLICT (group_id, topic, partition) DO UPDATE
                SET generation = o.generation + 1, owner = EXCLUDED.owner, updated_at = now()
            RETURNING topic, partition, next_offset, generation
            """,
            (
                self.group_id,
                self.owner,
                [topic for topic, _ in wanted],
                [partition for _, partition in wanted],
            ),
        ).fetchall()
        return {(topic, part): Claim(offset, gen) for topic, part, offset, gen in rows}

    def commit(
        self,
        conn: psycopg.Connection[Any],
        positions: Mapping[TopicPartitionKey, int],
        claims: Mapping[TopicPartitionKey, Claim],
    ) -> None:
        """Record ``positions`` (next offset to read) inside the caller's transaction.

        Raises:
            Fenced: a partition's generation moved on; the caller must roll back.
        """
        if not positions:
            return
        keys = list(positions)
        missing = [key for key in keys if key not in claims]
        if missing:
            raise Fenced(self.group_id, missing)
        updated = conn.execute(
            """
            UPDATE consumer_offsets AS o
               SET next_offset = v.n, updated_at = now()
              FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[]) AS v(t, p, n, g)
             WHERE o.group_id = %s AND o.topic = v.t AND o.partition = v.p
               AND o.generation = v.g
            RETURNING o.topic, o.partition
            """,
            (
                [topic for topic, _ in keys],
                [partition for _, partition in keys],
                [positions[key] for key in keys],
                [claims[key].generation for key in keys],
                self.group_id,
            ),
        ).fetchall()
        fenced = set(keys) - {(topic, partition) for topic, partition in updated}
        if fenced:
            raise Fenced(self.group_id, fenced)

    def reset(
        self, conn: psycopg.Connection[Any], key: TopicPartitionKey, claim: Claim, offset: int
    ) -> Claim:
        """Move a claimed partition to ``offset`` and bump its generation, as a claim does.

        Raises:
            Fenced: another worker claimed the partition since ``claim``.
        """
        row = conn.execute(
            """
            UPDATE consumer_offsets
               SET next_offset = %s, generation = generation + 1, owner = %s,
                   updated_at = now()
             WHERE group_id = %s AND topic = %s AND partition = %s AND generation = %s
            RETURNING generation
            """,
            (offset, self.owner, self.group_id, key[0], key[1], claim.generation),
        ).fetchone()
        if row is None:
            raise Fenced(self.group_id, [key])
        return Claim(offset, row[0])

    def generations(
        self, conn: psycopg.Connection[Any], keys: Iterable[TopicPartitionKey]
    ) -> dict[TopicPartitionKey, int]:
        """The current generation of each of ``keys`` (to notice an operator's move)."""
        wanted = list(keys)
        rows = conn.execute(
            """
            SELECT topic, partition, generation FROM consumer_offsets
             WHERE group_id = %s
               AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
            """,
            (self.group_id, [t for t, _ in wanted], [p for _, p in wanted]),
        ).fetchall()
        return {(topic, partition): generation for topic, partition, generation in rows}

    def stored(self, conn: psycopg.Connection[Any]) -> dict[TopicPartitionKey, int | None]:
        """Every committed position of the group (for lag and replay tools)."""
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s",
            (self.group_id,),
        ).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}
