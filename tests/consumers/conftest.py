"""Fixtures for consumer tests: a migrated schema and workers started in threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers import CONSUMER_MIGRATIONS, WorkerOptions
from consumers.embedded import EmbeddedWorker
from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.migrations import migrate
from tests.support.workers import StartedWorkers, StartWorker


@pytest.fixture
def sink_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    """A fresh schema with the consumers' tables."""
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    return pg_schema


@pytest.fixture
def worker_threads() -> Iterator[StartWorker]:
    """Start sink workers in threads; all are stopped after the test."""
    started: StartedWorkers[EmbeddedWorker] = StartedWorkers()

    def start(settings: Settings, options: WorkerOptions) -> EmbeddedWorker:
        return started.add(EmbeddedWorker(settings, options).start())

    yield start
    started.stop_all()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaServer]:
    """A broker of this test's own, so restarting it disturbs no other test (port 0: it
    picks a free port when it starts and keeps it across restarts)."""
    server = KafkaServer(stack_dir=tmp_path / "kafka-stack", port=0)
    server.start()
    yield server
    server.stop()
