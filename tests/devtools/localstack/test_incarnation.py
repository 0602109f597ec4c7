"""A fresh in-memory broker: offsets stored for the previous one's log are forgotten.

Forgetting deletes ``consumer_offsets`` rows in *every* schema of the database, so the test
works in a database of its own: in the shared one it would wipe the offsets of tests
running meanwhile on other xdist workers.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from devtools.localstack.incarnation import MARKER_TOPIC, forget_offsets_of_previous_broker
from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.clients import kafka_admin, postgres_connect


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[KafkaServer]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = KafkaServer(stack_dir=tmp_path, port=port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_database(
    stack_settings: Settings, pg_conn: psycopg.Connection[Any], unique: Any
) -> Iterator[Settings]:
    """Settings naming a fresh database on the session's Postgres, dropped afterwards."""
    name = unique("incarnation")
    pg_conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = urlsplit(stack_settings.postgres_dsn.get_secret_value())._replace(path=f"/{name}")
    yield stack_settings.with_overrides(postgres_dsn=dsn.geturl())
    pg_conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def private_conn(private_database: Settings) -> Iterator[psycopg.Connection[Any]]:
    with postgres_connect(private_database, autocommit=True) as conn:
        yield conn


def test_offsets_left_by_a_previous_broker_are_forgotten_once(
    private_database: Settings,
    broker: KafkaServer,
    private_conn: psycopg.Connection[Any],
    unique: Any,
) -> None:
    settings = private_database.with_overrides(kafka_bootstrap_servers=broker.address)
    pg_conn, pg_schema = private_conn, unique("t")
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
    table = sql.Identifier(pg_schema, "consumer_offsets")
    pg_conn.execute(
        sql.SQL(
            "CREATE TABLE {} (group_id text, topic text, partition int, next_offset bigint)"
        ).format(table)
    )
    insert = sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(table)
    count = sql.SQL("SELECT count(*) FROM {}").format(table)
    for row in (("g1", "t", 0, 7), ("g1", "t", 1, 3), ("g2", "u", 0, 1)):
        pg_conn.execute(insert, row)

    # The broker is new to this Postgres: everything stored points into a log now gone.
    lines = forget_offsets_of_previous_broker(settings, kafka_admin(settings))
    assert pg_conn.execute(count).fetchone() == (0,)
    assert (
        f"fresh local broker: forgot the offsets of group g1 in schema {pg_schema} "
        "into the previous broker's log (t[0]@7, t[1]@3)"
    ) in lines
    assert any(f"group g2 in schema {pg_schema}" in line for line in lines)
    assert MARKER_TOPIC in kafka_admin(settings).list_topics(timeout=10).topics

    # Same broker, `up` again: offsets committed meanwhile are kept.
    pg_conn.execute(insert, ("g1", "t", 0, 2))
    assert forget_offsets_of_previous_broker(settings, kafka_admin(settings)) == []
    assert pg_conn.execute(count).fetchone() == (1,)

    # The broker restarts (memory gone): forgotten again.
    broker.stop()
    broker.start()
    assert forget_offsets_of_previous_broker(settings, kafka_admin(settings)) != []
    assert pg_conn.execute(count).fetchone() == (0,)
