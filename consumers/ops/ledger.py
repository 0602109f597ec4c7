"""The ``dlq_redrives`` ledger: which dead letters were sent back, where, when and by whom.

:class:`~consumers.ops.redrive.Redriver` claims its records in it; a summary counts what it
says was redriven (:func:`redriven_positions`), a cache of a summary keys on
:func:`ledger_version`, and :func:`redrive_ledger` lists the latest redrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from consumers.ops.letters import _Source
from consumers.ops.positions import has_table


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.dlq_redrives").format(sql.Identifier(schema))


def redriven_positions(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str
) -> dict[tuple[int, int], int]:
    """Positions of ``dlq_topic`` already redriven → the record timestamp recorded."""
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_partition, dlq_offset, dlq_timestamp_ms FROM {} WHERE dlq_topic = %s"
        ).format(_table(schema)),
        (dlq_topic,),
    ).fetchall()
    return {(p, o): stamp for p, o, stamp in rows}


@dataclass(slots=True)
class _Redriven:
    """What ``dlq_redrives`` says about one dead-letter topic."""

    positions: dict[tuple[int, int], int]  # (partition, offset) → dlq record timestamp
    sources: set[_Source]


def _load_redriven(conn: psycopg.Connection[Any], schema: str, dlq_topic: str) -> _Redriven:
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_partition, dlq_offset, dlq_timestamp_ms, source_topic,"
            " source_partition, source_offset, value_digest FROM {} WHERE dlq_topic = %s"
        ).format(_table(schema)),
        (dlq_topic,),
    ).fetchall()
    positions = {(p, o): stamp for p, o, stamp, *_rest in rows}
    sources = {
        (topic, partition, offset, bytes(digest))
        for *_dlq, topic, partition, offset, digest in rows
        if partition is not None and offset is not None
    }
    return _Redriven(positions, sources)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of ``dlq_redrives``: a dead letter sent back, where, when and by whom."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    error_class: str
    redrive_count: int
    target_partition: int | None
    target_offset: int | None
    redriven_by: str
    redriven_at: datetime


def ledger_version(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str
) -> tuple[int, datetime | None]:
    """How many redrives of ``dlq_topic`` the ledger holds and the latest one's time: it
    changes whenever a redrive is recorded (a cache of a summary keys on it)."""
    if not has_table(conn, schema, "dlq_redrives"):
        return (0, None)
    row = conn.execute(
        sql.SQL("SELECT count(*), max(redriven_at) FROM {} WHERE dlq_topic = %s").format(
            _table(schema)
        ),
        (dlq_topic,),
    ).fetchone()
    return (0, None) if row is None else (int(row[0]), row[1])


def redrive_ledger(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str, *, limit: int = 50
) -> list[LedgerEntry]:
    """The latest redrives of ``dlq_topic``, newest first (empty without the table)."""
    if not has_table(conn, schema, "dlq_redrives"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_topic, dlq_partition, dlq_offset, source_topic, source_partition,"
            " source_offset, error_class, redrive_count, target_partition, target_offset,"
            " redriven_by, redriven_at FROM {} WHERE dlq_topic = %s"
            " ORDER BY redriven_at DESC, dlq_partition, dlq_offset LIMIT %s"
        ).format(_table(schema)),
        (dlq_topic, limit),
    ).fetchall()
    return [LedgerEntry(*row) for row in rows]
