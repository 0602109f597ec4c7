"""The ``consumer_offsets`` table as the operator tools see it: any group, any schema.

Workers use :class:`consumers.offsets.PostgresOffsets` for their own group through the
connection's search path; the tools name the schema explicitly, because they read and
move offsets of live and shadow schemas side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from consumers.ops.reader import Key


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.consumer_offsets").format(sql.Identifier(schema))


def groups_in(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Every consumer group with offsets in ``schema``, sorted."""
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT group_id FROM {} ORDER BY 1").format(_table(schema))
    ).fetchall()
    return [row[0] for row in rows]


def stored_offsets(
    conn: psycopg.Connection[Any], schema: str, group: str, topic: str | None = None
) -> dict[Key, int | None]:
    """The group's positions in Postgres (None: claimed, nothing committed yet)."""
    query = sql.SQL(
        "SELECT topic, partition, next_offset FROM {} WHERE group_id = %s"
        " AND (%s::text IS NULL OR topic = %s)"
    ).format(_table(schema))
    rows = conn.execute(query, (group, topic, topic)).fetchall()
    return {(t, p): offset for t, p, offset in rows}


def move_offsets(
    conn: psycopg.Connection[Any],
    schema: str,
    group: str,
    offsets: Mapping[Key, int],
    *,
    owner: str,
) -> None:
    """Set the group's positions and bump each partition's generation.

    The bump fences any worker still holding the partition: its next commit finds a
    newer generation and rolls back, so it cannot overwrite the new position. Runs in
    the caller's transaction.
    """
    if not offsets:
        return
    keys = list(offsets)
    conn.execute(
        sql.SQL(
            """
            INSERT INTO {table} AS o (group_id, topic, partition, next_offset, generation, owner)
            SELECT %s, t, p, n, 1, %s
              FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS v(t, p, n)
            ON CONFLICT (group_id, topic, partition) DO UPDATE
               SET next_offset = EXCLUDED.next_offset, generation = o.generation + 1,
                   owner = EXCLUDED.owner, updated_at = now()
            """
        ).format(table=_table(schema)),
        (
            group,
            owner,
            [topic for topic, _ in keys],
            [partition for _, partition in keys],
            [offsets[key] for key in keys],
        ),
    )


def has_table(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    """Whether ``schema.table`` exists (e.g. a shadow schema not yet migrated)."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()
    return row is not None and row[0] is not None


def forget_topics(
    conn: psycopg.Connection[Any], schema: str, topics: Sequence[str]
) -> dict[str, int]:
    """Forget every position Sidestream keeps for ``topics`` in ``schema``: the groups'
    offsets (``consumer_offsets``) and the redrive ledger of dead-letter topics
    (``dlq_redrives``). For topics that were deleted and created again: the positions
    would point into the old log. Returns the rows deleted per table (in one transaction).
    """
    deleted: dict[str, int] = {}
    with conn.transaction():
        for table, column in (("consumer_offsets", "topic"), ("dlq_redrives", "dlq_topic")):
            if not has_table(conn, schema, table):
                continue
            cursor = conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s)").format(
                    sql.Identifier(schema, table), sql.Identifier(column)
                ),
                (list(topics),),
            )
            deleted[table] = cursor.rowcount
    return deleted
