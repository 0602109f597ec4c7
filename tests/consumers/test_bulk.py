from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from consumers.bulk import Table, insert_new_rows
from runtime import Settings
from runtime.clients import postgres_connect

SPEC = Table("items", (("event_id", "uuid"), ("n", "int4"), ("note", "text")))


@pytest.fixture
def conn(stack_settings: Settings, pg_schema: str) -> Any:
    with postgres_connect(stack_settings, schema=pg_schema, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE items"
            " (event_id uuid PRIMARY KEY, n int NOT NULL CHECK (n >= 0), note text)"
        )
        yield connection


def _rows(count: int) -> list[tuple[uuid.UUID, int, str | None]]:
    return [(uuid.uuid4(), i, None if i % 2 else f"note {i}") for i in range(count)]


def test_new_rows_take_the_copy_fast_path(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(1000)
    with conn.transaction():
        inserted = insert_new_rows(conn, SPEC, rows)
    assert inserted.count == 1000
    assert inserted.keys is None  # all new
    assert conn.execute("SELECT count(*), sum(n) FROM items").fetchone() == (1000, 499500)


def test_a_replayed_batch_inserts_only_what_is_missing(conn: psycopg.Connection[Any]) -> None:
    rows = _rows(100)
    with conn.transaction():
        insert_new_rows(conn, SPEC, rows[:60])
    with conn.transaction():
        inserted = insert_new_rows(conn, SPEC, rows + rows[:5])  # in-batch duplicates too
    assert inserted.count == 40
    assert inserted.keys == frozenset(row[0] for row in rows[60:])
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (100,)


def test_bad_data_raises_the_databases_own_error(conn: psycopg.Connection[Any]) -> None:
    rows = [*_rows(3), (uuid.uuid4(), -1, "negative")]
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        insert_new_rows(conn, SPEC, rows)
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
