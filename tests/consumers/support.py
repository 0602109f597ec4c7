"""Helpers for consumer tests: building and producing events, reading topics, and sink
workers in threads or in real child processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Message
from psycopg import sql

from consumers import WorkerOptions
from runtime import Settings
from runtime.clients import kafka_consumer, kafka_producer
from runtime.environment import child_environment
from schemas import (
    Event,
    EventSerializer,
)


def count_rows(conn: psycopg.Connection[Any], schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def produce(
    settings: Settings, topic: str, events: Iterable[Event | bytes], *, key: bytes | None = None
) -> int:
    """Publish pre-built events (or raw bytes) and wait for every delivery."""
    serializer = EventSerializer()
    producer = kafka_producer(settings)
    count = 0
    for item in events:
        if isinstance(item, bytes):
            producer.produce(topic, value=item, key=key or b"raw")
        else:
            producer.produce(topic, value=serializer.serialize(item, topic), key=item.key)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return count


def read_all(settings: Settings, topic: str, *, expect: int, timeout: float = 30) -> list[Message]:
    """Read ``expect`` messages from ``topic`` (a fresh group, from the beginning)."""
    consumer: Consumer = kafka_consumer(settings, f"reader-{time.monotonic_ns()}")
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < expect and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
    finally:
        consumer.close()
    return messages


def worker_process(
    settings: Settings,
    options: WorkerOptions,
    *,
    log: Path,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A sink worker as a real child process (``python -m sidestream worker run``)."""
    command = [sys.executable, "-m", "sidestream", "worker", "run", options.sink]
    if options.group_id:
        command += ["--group", options.group_id]
    for topic in options.topics or ():
        command += ["--topic", topic]
    if options.schema:
        command += ["--schema", options.schema]
    env = child_environment(settings, extra={"SIDESTREAM_LOG_FORMAT": "json", **(extra_env or {})})
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
