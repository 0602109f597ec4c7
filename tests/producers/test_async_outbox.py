"""AsyncOutbox writes exactly the row producers.Outbox writes (the relay reads both)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from producers import AsyncOutbox, Outbox, OutboxError
from runtime import Settings
from schemas import ChangeKind, EntityChanged, ValidationError

_COLUMNS = "event_id, event_type, topic, key, value, header_names, header_values"
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_async_rows_equal_the_sync_outbox_rows(
    stack_settings: Settings, outbox_schema: str, pg_conn: psycopg.Connection[Any]
) -> None:
    event = EntityChanged.new(
        tenant_id="acme",
        producer="test",
        entity_type="project",
        entity_id="p1",
        version=3,
        change_kind=ChangeKind.UPDATED,
    )
    headers = [("x-request-id", "r-1")]
    with pg_conn.transaction():
        Outbox(schema=outbox_schema).add(
            pg_conn, event, topic="t.sync", headers=headers, traceparent=TRACE
        )

    async def body() -> None:
        dsn = stack_settings.postgres_dsn.get_secret_value()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            outbox = AsyncOutbox(schema=outbox_schema)
            with pytest.raises(OutboxError):
                await outbox.add_many(conn, [(event, "t.async", headers)])
            async with conn.transaction():
                ids = await outbox.add_many(
                    conn, [(event, "t.async", headers), (event, "t.async", [])], traceparent=TRACE
                )
            assert len(ids) == 2
            assert ids[0] < ids[1]
            bad = EntityChanged.new(
                tenant_id="acme",
                producer="test",
                entity_type="project",
                entity_id="p1",
                version="three",
                change_kind=ChangeKind.UPDATED,
            )
            with pytest.raises(ValidationError):
                async with conn.transaction():
                    await outbox.add_many(conn, [(event, "t.async", []), (bad, "t.async", [])])

    asyncio.run(body())
    rows = pg_conn.execute(
        f'SELECT {_COLUMNS} FROM "{outbox_schema}".outbox ORDER BY id'
    ).fetchall()
    assert len(rows) == 3  # the invalid batch wrote nothing
    sync_row, async_row, bare_row = rows
    assert async_row[2] == "t.async"
    assert async_row[:2] + async_row[3:] == sync_row[:2] + sync_row[3:]
    assert bare_row[5] == ["traceparent"]
