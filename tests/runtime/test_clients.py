"""Each client factory talks to the real server it is built for."""

from __future__ import annotations

from typing import Any

import psycopg
import redis
from psycopg import sql

from runtime import Settings
from runtime.clients import kafka_consumer, kafka_producer, postgres_pool


def test_produce_and_consume_through_the_broker_with_headers_and_compression(
    stack_settings: Settings, topic: str, unique: Any
) -> None:
    producer = kafka_producer(stack_settings)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(50)}
    for key, value in sent.items():
        producer.produce(topic, value=value, key=key, headers=[("traceparent", b"00-abc-01")])
    assert producer.flush(15) == 0

    consumer = kafka_consumer(stack_settings, unique("group"))
    consumer.subscribe([topic])
    received: dict[bytes | None, bytes | None] = {}
    headers_seen: set[tuple[str, str | bytes | None]] = set()
    try:
        for _ in range(60):
            for message in consumer.consume(num_messages=100, timeout=0.5):
                assert message.error() is None
                received[message.key()] = message.value()
                headers_seen.update(dict(message.headers() or []).items())
            if len(received) == len(sent):
                break
    finally:
        consumer.close()
    assert received == sent
    assert headers_seen == {("traceparent", b"00-abc-01")}


def test_postgres_pool_writes_and_reads(stack_settings: Settings, pg_schema: str) -> None:
    pool = postgres_pool(stack_settings, name="test")
    try:
        table = sql.Identifier(pg_schema, "things")
        with pool.connection() as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text)").format(table))
            with conn.cursor().copy(sql.SQL("COPY {} (id, name) FROM STDIN").format(table)) as copy:
                for i in range(100):
                    copy.write_row((i, f"n{i}"))
        with pool.connection() as conn:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert count == (100,)
    finally:
        pool.close()


def test_postgres_rejects_a_duplicate_key(stack_settings: Settings, pg_schema: str) -> None:
    pool = postgres_pool(stack_settings, name="test")
    try:
        table = sql.Identifier(pg_schema, "things")
        with pool.connection() as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
        try:
            with pool.connection() as conn:
                conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
        except psycopg.errors.UniqueViolation:
            pass
        else:
            raise AssertionError("the unique constraint did not fire")
    finally:
        pool.close()


def test_redis_round_trip(redis_conn: redis.Redis, key_prefix: str) -> None:
    redis_conn.set(f"{key_prefix}a", b"1", px=10_000)
    assert redis_conn.get(f"{key_prefix}a") == b"1"
    assert 0 < redis_conn.pttl(f"{key_prefix}a") <= 10_000
