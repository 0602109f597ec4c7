"""Render time of every console page on a large installation, for the bench harness
(:func:`measure_console_pages`).

What is measured: server-side time of one GET of each page (median of ``repeats`` after
a warm-up), through the ASGI app in-process (no network, no browser); the first view of
the dead-letter pages right after start-up (while the background index reads the topic)
and the topic page's views during that read; the time the index takes. With
``dead_letters`` records on a sink's dead-letter topic (five error classes, a tenth of
them already redriven) and ``audit_rows`` rows in ``audit_events``, plus
notifications with attempts and live window counts.

Everything is scratch: fresh topics and a fresh Postgres schema, deleted afterwards.

Run by hand: ``.venv/bin/python -m services.console._bench [dead_letters] [audit_rows]``.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from fastapi import Request, Response
from fastapi.testclient import TestClient
from psycopg import sql

from consumers import dead_letter_topic
from consumers.dead_letters import dead_letter_headers
from consumers.migrations_source import CONSUMER_MIGRATIONS
from runtime import Settings
from runtime.clients import kafka_admin, kafka_producer, postgres_connect
from runtime.migrations import migrate
from schemas import AuditEvent, AuditOutcome, EventSerializer
from services.console.access import Principal, StaticKeyVerifier
from services.console.app import create_app
from services.console.audit import AuditTrail
from services.console.pipelines import Pipeline
from services.console.resources import ConsoleConfig

__all__ = ["INDEX_FIGURE", "measure_console_pages"]

logger = logging.getLogger(__name__)

_CLASSES = ("CheckViolation", "DecodeError", "UnknownSchemaError", "NotNullViolation", "WrongType")
_KEY = "bench-operator-key"


class _NoAudit:
    """The bench takes no action: nothing is published."""

    def publish(self, event: Any, *, topic: str | None = None) -> None:
        raise AssertionError("the bench takes no action")


def _fill_dead_letters(settings: Settings, topic: str, dlq: str, n: int) -> None:
    serializer = EventSerializer()
    value = serializer.serialize(
        AuditEvent.new(
            tenant_id="bench",
            producer="bench",
            actor_id="u",
            action="",
            resource_type="r",
            resource_id="1",
            outcome=AuditOutcome.SUCCESS,
        ),
        topic,
    )
    producer = kafka_producer(settings, **{"linger.ms": 50})
    now = int(time.time() * 1000)
    for i in range(n):
        headers = dead_letter_headers(
            topic=topic,
            partition=0,
            offset=i,
            error_class=_CLASSES[i % len(_CLASSES)],
            message="23514: new row violates check constraint",
            worker="bench",
            time_ms=now - (n - i) * 10,
        )
        while True:
            try:
                producer.produce(dlq, value=value, key=b"bench", headers=headers, partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "dead letters not all acknowledged"


def _fill_tables(
    settings: Settings, schema: str, dlq: str, n_letters: int, audit_rows: int
) -> None:
    with postgres_connect(settings, schema=schema, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO audit_events (event_id, occurred_at, tenant_id, producer, actor_id,
                action, resource_type, resource_id, outcome, schema_version, kafka_partition,
                kafka_offset)
            SELECT gen_random_uuid(), now() - make_interval(secs => g %% 86400),
                   'tenant-' || (g %% 50), 'bench', 'user-' || (g %% 997), 'invoice.update',
                   'invoice', 'inv-' || g, 'SUCCESS', 1, g %% 6, g
              FROM generate_series(1, %s) AS g
            """,
            (audit_rows,),
        )
        # A tenth of the dead letters were redriven once: the ledger has rows to join.
        conn.execute(
            """
            INSERT INTO dlq_redrives (dlq_topic, dlq_partition, dlq_offset, dlq_timestamp_ms,
                source_topic, source_partition, source_offset, value_digest, error_class,
                redrive_count, redriven_by)
            SELECT %s, 0, g, 0, 'bench', 0, g, '\\x00', 'CheckViolation', 1, 'bench'
              FROM generate_series(0, %s - 1, 10) AS g
            """,
            (dlq, n_letters),
        )
        conn.execute(
            """
            INSERT INTO live_window_counts (window_seconds, window_start, window_end, tenant_id,
                event_type, events)
            SELECT 60, date_trunc('minute', now()) - make_interval(mins => m),
                   date_trunc('minute', now()) - make_interval(mins => m - 1),
                   'tenant-' || t, 'analytics_event', 100 + m
              FROM generate_series(1, 360) AS m, generate_series(1, 20) AS t
            """
        )
        conn.execute(
            """
            INSERT INTO notifications (notification_id, event_id, tenant_id, channel, recipient,
                template, requested_at, status, attempts)
            SELECT gen_random_uuid(), gen_random_uuid(), 'tenant-' || (g % 50), 'WEBHOOK',
                   'https://hooks' || (g % 20) || '.example.test/x', 'welcome', now(),
                   (ARRAY['sent', 'failed', 'pending'])[1 + g % 3], 1
              FROM generate_series(1, 20000) AS g
            """
        )
        conn.execute(
            """
            INSERT INTO notification_attempts (notification_id, attempt, worker, destination,
                started_at, finished_at, latency_ms, outcome, status_code)
            SELECT notification_id, 1, 'bench', destination, now() - interval '1 minute',
                   now() - interval '1 minute', 20 + random() * 50,
                   CASE status WHEN 'sent' THEN 'sent' ELSE 'transient' END, 200
              FROM notifications
            """
        )


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """The test client logs every request at INFO: not in a benchmark's output."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


#: The figure of how long the background index took to read the topic whole.
INDEX_FIGURE = "dead-letter index complete (background, from start-up)"
_INDEXED = INDEX_FIGURE
_INDEX_DEADLINE_S = 600.0


def _first_views(client: TestClient, dlq: str) -> dict[str, float]:
    """The first view of the dead-letter pages, right after start-up: at full size the
    index has only begun reading the topic, so they show its partial state (at small
    sizes it may be complete already)."""
    timings = {}
    for page in ("/dead-letters", f"/dead-letters/{dlq}"):
        started = time.perf_counter()
        response = client.get(page)
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, page
        state = "partial" if "data-indexing" in response.text else "complete"
        logger.info("console bench: first view of %s: %.1f ms, %s", page, elapsed, state)
        timings[f"{page.replace(dlq, '<dlq>')} (first view)"] = elapsed
    return timings


def _views_while_indexing(
    client: TestClient, app: Any, dlq: str, served_ms: list[float]
) -> tuple[list[float], list[float]]:
    """Render times of the topic page viewed every 0.2 s until the index is complete, as
    the client saw them and inside the app (``served_ms``: the app's own timings). The
    in-process client shares the GIL with the index's thread: its own thread hops are
    slowed too, which a browser's are not."""
    index = app.state.resources.dead_letters
    samples: list[float] = []
    inside: list[float] = []
    deadline = time.monotonic() + _INDEX_DEADLINE_S
    while not index.view(dlq, wait_s=0).complete:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{dlq} not indexed after {_INDEX_DEADLINE_S:.0f} s")
        started = time.perf_counter()
        response = client.get(f"/dead-letters/{dlq}")
        elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200
        if "data-indexing" in response.text:
            samples.append(elapsed)
            inside.append(served_ms[-1])
        time.sleep(0.2)
    return samples, inside


def measure_console_pages(
    settings: Settings, *, dead_letters: int, audit_rows: int, repeats: int = 5
) -> dict[str, float]:
    """Median render time in milliseconds of each page (path → ms) once the dead-letter
    index is complete; the first views of the dead-letter pages right after start-up
    and the topic page's views while the index reads the topic (partial state); and how
    long the background index took to read the topic whole (:data:`INDEX_FIGURE`, ms)."""
    token = uuid.uuid4().hex[:8]
    topic, schema, group = f"bench_console_{token}", f"bench_console_{token}", f"bench_{token}"
    dlq = dead_letter_topic(topic)
    admin = kafka_admin(settings)
    futures = admin.create_topics(
        [
            NewTopic(name, num_partitions=p, replication_factor=1)
            for name, p in ((topic, 3), (dlq, 1))
        ]
    )
    for future in futures.values():
        future.result(timeout=30)
    try:
        with postgres_connect(settings, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            migrate(conn, [CONSUMER_MIGRATIONS], schema=schema)
        _fill_dead_letters(settings, topic, dlq, dead_letters)
        _fill_tables(settings, schema, dlq, dead_letters, audit_rows)
        config = ConsoleConfig(
            pipelines=(
                Pipeline(
                    "audit", group, (topic,), "audit_events", sink="audit", subject="audit_event"
                ),
            ),
            schema=schema,
        )
        app = create_app(
            settings,
            config,
            verifier=StaticKeyVerifier.of({_KEY: Principal("bench", frozenset({"read"}))}),
            audit=AuditTrail(_NoAudit()),
        )
        pages = [
            "/pipelines",
            "/dead-letters",
            f"/dead-letters/{dlq}",
            f"/dead-letters/{dlq}/0/{max(0, dead_letters - 1)}",
            "/replay?sink=audit&start=beginning",
            "/schemas",
            "/schemas/analytics_event",
            "/deliveries",
            "/analytics",
            "/bench",
        ]
        served_ms: list[float] = []

        @app.middleware("http")
        async def _served(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            started = time.perf_counter()
            response = await call_next(request)
            served_ms.append((time.perf_counter() - started) * 1000)
            return response

        timings: dict[str, float] = {}
        with _quiet("httpx", "httpx2"), TestClient(app) as client:
            started_up = time.perf_counter()  # the index starts reading the topic here
            client.post("/login", data={"key": _KEY})
            timings.update(_first_views(client, dlq))
            during, inside = _views_while_indexing(client, app, dlq, served_ms)
            if during:
                timings["/dead-letters/<dlq> (while indexing, median)"] = statistics.median(during)
                timings["/dead-letters/<dlq> (while indexing, max)"] = max(during)
                timings["/dead-letters/<dlq> (while indexing, max in the app)"] = max(inside)
            timings[_INDEXED] = (time.perf_counter() - started_up) * 1000
            for page in pages:
                assert client.get(page).status_code == 200, page  # warm-up
                samples = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = client.get(page)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, page
                timings[page.replace(dlq, "<dlq>")] = statistics.median(samples)
        return timings
    finally:
        for future in admin.delete_topics([topic, dlq], operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        with postgres_connect(settings, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    from runtime import load_settings

    letters = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    for path, ms in measure_console_pages(
        load_settings(), dead_letters=letters, audit_rows=rows
    ).items():
        print(f"{ms:9.1f} ms  {path}")
