"""Fixtures of the console tests: a migrated schema, a private sink topic (+ its .dlq and
an audit topic), and the console app over them with an in-test key verifier."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from consumers import WorkerOptions, dead_letter_topic
from consumers.dead_letters import dead_letter_headers
from consumers.ops import TopicReader
from consumers.ops.reader import Key
from consumers.ops.redrive import REDRIVE_COUNT_HEADER
from producers import EventPublisher
from runtime import Settings
from runtime.clients import kafka_producer
from services.console import (
    AuditTrail,
    ConsoleConfig,
    Pipeline,
    Principal,
    StaticKeyVerifier,
    create_app,
)
from tests.consumers.conftest import sink_schema, worker_threads  # noqa: F401 - fixtures

OPERATOR_KEY = "operator-key-for-tests"
READER_KEY = "reader-key-for-tests"
NOBODY_KEY = "no-scope-key-for-tests"

VERIFIER = StaticKeyVerifier.of(
    {
        OPERATOR_KEY: Principal("test-operator", frozenset({"admin", "read"})),
        READER_KEY: Principal("test-reader", frozenset({"read"})),
        NOBODY_KEY: Principal("test-notify", frozenset({"notify"})),
    }
)


@dataclass(frozen=True, slots=True)
class ConsoleEnv:
    """The console under test and the names it was built over."""

    settings: Settings
    app: FastAPI
    config: ConsoleConfig
    schema: str
    topic: str
    dlq: str
    group: str
    audit_topic: str
    options: WorkerOptions
    tmp: Path


@pytest.fixture
def console_env(
    stack_settings: Settings,
    sink_schema: str,  # noqa: F811 - the imported fixture
    make_topic: Callable[..., str],
    unique: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[ConsoleEnv]:
    topic = make_topic("audit", partitions=2)
    dlq = make_topic(name=dead_letter_topic(topic), partitions=1)
    audit_topic = make_topic("console_audit", partitions=1)
    alerts_topic = make_topic("alerts", partitions=1)
    group = unique("g")
    pipeline = Pipeline(
        "audit", group, (topic,), "audit_events", sink="audit", subject="audit_event"
    )
    config = ConsoleConfig(
        pipelines=(pipeline,),
        schema=sink_schema,
        targets_dir=tmp_path / "targets",
        bench_dir=tmp_path / "bench",
        alerts_topic=alerts_topic,
    )
    publisher = EventPublisher(
        settings=stack_settings, producer="console-tests", registry=CollectorRegistry()
    )
    app = create_app(
        stack_settings, config, verifier=VERIFIER, audit=AuditTrail(publisher, topic=audit_topic)
    )
    try:
        yield ConsoleEnv(
            settings=stack_settings,
            app=app,
            config=config,
            schema=sink_schema,
            topic=topic,
            dlq=dlq,
            group=group,
            audit_topic=audit_topic,
            options=WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema),
            tmp=tmp_path,
        )
    finally:
        publisher.close(10)


def signed_in(client: TestClient, key: str) -> TestClient:
    response = client.post("/login", data={"key": key}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def csrf_of(html: str) -> str:
    marker = 'name="csrf" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


@pytest.fixture
def operator(console_env: ConsoleEnv) -> Iterator[TestClient]:
    with TestClient(console_env.app) as client:
        yield signed_in(client, OPERATOR_KEY)


@pytest.fixture
def reader(console_env: ConsoleEnv) -> Iterator[TestClient]:
    with TestClient(console_env.app) as client:
        yield signed_in(client, READER_KEY)


def count(conn: psycopg.Connection[Any], query: str, *params: Any) -> int:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the browser tests' module (skips when it is not installed).

    Module scope on purpose: Playwright's sync API keeps an event loop running on this
    thread while it is open, and every later test that calls ``asyncio.run`` would fail.
    """
    from playwright.sync_api import sync_playwright

    from tests.services.console.browser import CHROMIUM_FLAGS, chromium_or_skip

    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture
def console_url(console_env: ConsoleEnv) -> Iterator[str]:
    """The console under test, served over HTTP for the browser."""
    from tests.services.console.browser import served

    with served(console_env.app) as url:
        yield url


_CLASSES = ("CheckViolation", "DecodeError", "UnknownSchemaError", "NotNullViolation")


def fill_dead_letter_topic(settings: Settings, topic: str, dlq: str, n: int, stamp_ms: int) -> None:
    """``n`` dead letters of ``topic`` straight onto ``dlq`` (record timestamp
    ``stamp_ms``), four classes in turn; every ninth one carries the redrive cap (3)."""
    producer = kafka_producer(settings, **{"linger.ms": 50})
    for i in range(n):
        headers = dead_letter_headers(
            topic=topic,
            partition=0,
            offset=i,
            error_class=_CLASSES[i % len(_CLASSES)],
            message="23514: new row violates check constraint",
            worker="console-test",
            time_ms=stamp_ms + i,
        )
        if i % 9 == 0:
            headers.append((REDRIVE_COUNT_HEADER, b"3"))
        producer.produce(dlq, value=b"x", key=b"k", headers=headers, timestamp=stamp_ms)
        producer.poll(0)
    assert producer.flush(60) == 0


def gated_console(
    env: ConsoleEnv, gate: threading.Event, *, after: int
) -> tuple[FastAPI, EventPublisher]:
    """The console of ``env`` whose dead-letter index reads with a real reader that stops
    after ``after`` letters until ``gate`` is set: a test sees the partial state for as
    long as it needs (close the publisher after)."""

    class GatedReader(TopicReader):
        def scan(self, ranges: Mapping[Key, tuple[int, int]]) -> Iterator[Message]:
            for i, message in enumerate(super().scan(ranges)):
                if i == after:
                    assert gate.wait(120), "the test never opened the gate"
                yield message

    publisher = EventPublisher(
        settings=env.settings, producer="console-tests", registry=CollectorRegistry()
    )
    app = create_app(
        env.settings,
        env.config,
        verifier=VERIFIER,
        audit=AuditTrail(publisher, topic=env.audit_topic),
        # The gate may hold a read longer than the reader's default 10 s without progress.
        open_reader=lambda: GatedReader.from_settings(env.settings, timeout_s=180),
    )
    return app, publisher
