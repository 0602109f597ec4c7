"""Fast batch inserts: binary COPY, idempotent under replay.

Offsets live in the same transaction as the rows, so a batch almost never contains an
event that is already stored (only replays and redrives do). The fast path is therefore a
binary COPY straight into the target inside a savepoint; when it hits a unique violation,
the savepoint rolls back and the batch goes through a temporary staging table and one
``INSERT … SELECT … ON CONFLICT DO NOTHING``, which skips the rows already present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from schemas.rows import COPY_SIGNATURE, COPY_TRAILER


@dataclass(frozen=True, slots=True)
class Inserted:
    """Which rows of a batch were new: all of them, or those whose key is in ``keys``."""

    count: int
    keys: frozenset[Any] | None  # None: every row was new

    def includes(self, key: Any) -> bool:
        return self.keys is None or key in self.keys


@dataclass(frozen=True, slots=True)
class Table:
    """A target table: its columns with their Postgres types, and its dedupe key column."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: str = "event_id"

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def column_types(self) -> list[str]:
        return [pg_type for _, pg_type in self.columns]


def _copy(conn: psycopg.Connection[Any], table: str, spec: Table, rows: Sequence[Any]) -> None:
    """COPY ``rows`` into ``table``: tuples of Python values, or rows already in binary COPY
    form (`bytes`, from a compiled row decoder) sent as they are, in one stream."""
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    )
    with conn.cursor().copy(statement) as copy:
        if rows and isinstance(rows[0], bytes):
            # One buffer per batch: psycopg sends it in chunks, without touching the rows.
            copy.write(b"".join((COPY_SIGNATURE, *rows, COPY_TRAILER)))
            return
        copy.set_types(spec.column_types)
        write_row = copy.write_row
        for row in rows:
            write_row(row)


def insert_new_rows(conn: psycopg.Connection[Any], spec: Table, rows: Sequence[Any]) -> Inserted:
    """Insert ``rows`` (tuples in ``spec.columns`` order, or all of them binary COPY rows in
    that order, see `schemas.rows`), skipping keys already stored.

    Runs inside the caller's transaction. Errors other than a duplicate key (bad data,
    SQLSTATE 22/23) propagate unchanged so the caller can isolate the bad row.
    """
    if not rows:
        return Inserted(0, frozenset())
    try:
        with conn.transaction():  # a savepoint: a duplicate undoes only this attempt
            _copy(conn, spec.name, spec, rows)
        return Inserted(len(rows), None)
    except psycopg.errors.UniqueViolation:
        pass
    stage = f"_stage_{spec.name}"
    conn.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
        ).format(sql.Identifier(stage), sql.Identifier(spec.name))
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(stage)))
    _copy(conn, stage, spec, rows)
    columns = sql.SQL(", ").join(map(sql.Identifier, spec.column_names))
    returned = conn.execute(
        sql.SQL(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM {stage}"
            " ON CONFLICT DO NOTHING RETURNING {key}"
        ).format(
            target=sql.Identifier(spec.name),
            columns=columns,
            stage=sql.Identifier(stage),
            key=sql.Identifier(spec.key),
        )
    ).fetchall()
    return Inserted(len(returned), frozenset(row[0] for row in returned))
