"""Fixtures for consumer tests: a migrated schema and workers started in threads."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers import CONSUMER_MIGRATIONS, WorkerOptions
from consumers.embedded import EmbeddedWorker
from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.migrations import migrate


@pytest.fixture
def sink_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    """A fresh schema with the consumers' tables."""
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    return pg_schema


@pytest.fixture
def worker_threads() -> Iterator[Callable[..., EmbeddedWorker]]:
    """Start sink workers in threads; all are stopped after the test."""
    started: list[EmbeddedWorker] = []

    def start(settings: Settings, options: WorkerOptions) -> EmbeddedWorker:
        worker = EmbeddedWorker(settings, options).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop_event.set()
    for worker in started:
        worker.shutdown()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    """A broker of this test's own, so restarting it disturbs no other test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = KafkaServer(stack_dir=tmp_path / "kafka-stack", port=port)
    server.start()
    yield server
    server.stop()
