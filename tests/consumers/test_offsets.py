from __future__ import annotations

from typing import Any

import psycopg
import pytest

from consumers import Fenced, PostgresOffsets
from runtime import Settings
from runtime.clients import postgres_connect


@pytest.fixture
def conn(stack_settings: Settings, sink_schema: str) -> Any:
    with postgres_connect(stack_settings, schema=sink_schema, autocommit=True) as connection:
        yield connection


def test_claim_returns_stored_offsets_and_bumps_the_generation(
    conn: psycopg.Connection[Any],
) -> None:
    worker_a = PostgresOffsets("g", owner="a")
    first = worker_a.claim(conn, [("t", 0), ("t", 1)])
    assert first[("t", 0)].next_offset is None
    with conn.transaction():
        worker_a.commit(conn, {("t", 0): 42}, first)
    again = PostgresOffsets("g", owner="b").claim(conn, [("t", 0)])
    assert again[("t", 0)].next_offset == 42
    assert again[("t", 0)].generation == first[("t", 0)].generation + 1


def test_a_worker_that_lost_the_partition_cannot_commit(conn: psycopg.Connection[Any]) -> None:
    worker_a, worker_b = PostgresOffsets("g", owner="a"), PostgresOffsets("g", owner="b")
    claims_a = worker_a.claim(conn, [("t", 0), ("t", 1)])
    claims_b = worker_b.claim(conn, [("t", 1)])  # a rebalance moved partition 1 to b
    conn.execute("CREATE TABLE rows (v int)")

    def write_and_commit() -> None:
        with conn.transaction():
            conn.execute("INSERT INTO rows VALUES (1)")
            worker_a.commit(conn, {("t", 0): 10, ("t", 1): 10}, claims_a)

    with pytest.raises(Fenced) as info:
        write_and_commit()
    assert info.value.partitions == [("t", 1)]
    assert conn.execute("SELECT count(*) FROM rows").fetchone() == (0,)  # rolled back
    with conn.transaction():
        worker_b.commit(conn, {("t", 1): 7}, claims_b)
    assert worker_a.stored(conn) == {("t", 0): None, ("t", 1): 7}


def test_groups_are_independent(conn: psycopg.Connection[Any]) -> None:
    one, two = PostgresOffsets("one", owner="x"), PostgresOffsets("two", owner="x")
    claims = one.claim(conn, [("t", 0)])
    two.claim(conn, [("t", 0)])
    with conn.transaction():
        one.commit(conn, {("t", 0): 5}, claims)  # not fenced by the other group
    assert two.stored(conn) == {("t", 0): None}
