"""Fixtures of the producers tests: fresh metric registries, a reader that drains a topic up
to its high watermarks, an outbox schema, and a private broker to freeze.

Freezing (SIGSTOP) the session's broker would stall every other test using it at the same
time, so fault tests start their own tansu broker on a free port (milliseconds) and freeze
that one; it is stopped, with its data, after the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported, not in __all__
from prometheus_client import CollectorRegistry

from devtools.localstack.kafka import KafkaServer
from producers import OUTBOX_MIGRATIONS
from runtime import Settings, new_registry
from runtime.clients import consumer_config, kafka_admin
from runtime.migrations import migrate

ReadAll = Callable[..., list[Message]]
_QUIET_S = 0.5


@pytest.fixture
def registry() -> CollectorRegistry:
    return new_registry()


def read_all(
    settings: Settings, topic: str, *, expected: int | None = None, timeout: float = 30.0
) -> list[Message]:
    """Every message of `topic`, each partition in offset order.

    Reads until no message came for half a second (after `expected` messages, when given), or
    fails after `timeout` seconds. (The local broker's high watermark lags behind the last
    batch, so the end of a topic is found by reading, not by asking for it.)
    """
    consumer = Consumer(
        consumer_config(settings, f"reader-{uuid.uuid4().hex[:10]}", **{"fetch.wait.max.ms": 50})
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            for message in batch:
                error = message.error()
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                if error is None:
                    messages.append(message)
            if batch:
                quiet_since = time.monotonic()
            enough = expected is None or len(messages) >= expected
            if enough and time.monotonic() - quiet_since >= _QUIET_S:
                return messages
        raise AssertionError(
            f"read {len(messages)} messages of {topic} (expected {expected}) in {timeout}s"
        )
    finally:
        consumer.close()


@pytest.fixture
def outbox_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    """A fresh schema holding the outbox table."""
    migrate(pg_conn, [OUTBOX_MIGRATIONS], schema=pg_schema)
    return pg_schema


@dataclass
class PrivateBroker:
    """A tansu broker of one test's own: `settings` point at it; it can be frozen."""

    settings: Settings
    pid: int

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the broker for the duration of the block; SIGCONT always follows."""
        os.kill(self.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def create_topic(self, name: str | None = None, partitions: int = 3) -> str:
        name = name or f"private_{uuid.uuid4().hex[:10]}"
        admin = kafka_admin(self.settings)
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
            name
        ].result(timeout=15)
        return name


@pytest.fixture
def private_broker(stack_settings: Settings, tmp_path: Path) -> Iterator[PrivateBroker]:
    server = KafkaServer(stack_dir=tmp_path, port=0)
    status = server.start()
    assert status.pid is not None
    try:
        yield PrivateBroker(
            stack_settings.with_overrides(kafka_bootstrap_servers=server.address), status.pid
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def read_topic() -> ReadAll:
    """`read_all(settings, topic, expected=..., timeout=...)`: drain a topic."""
    return read_all
