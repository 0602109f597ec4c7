"""Helpers for the live analytics tests: events at chosen event times, the expected
windows of a stream, the worker as a child process, and reading what it produced."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from consumers.live_analytics import LiveAnalyticsOptions
from runtime import Settings
from runtime.clients import kafka_producer
from runtime.environment import child_environment
from runtime.ports import ReadyFile
from schemas import AnalyticsEvent, AuditEvent, AuditOutcome, Event, EventSerializer

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""Event time zero of the test streams (a minute boundary, far from the wall clock)."""

WindowRow = tuple[int, datetime, str, str]
"""(window_seconds, window_start, tenant, event type)."""


def at(minute: float, second: float = 0) -> datetime:
    return T0 + timedelta(minutes=minute, seconds=second)


def analytics(tenant: str, name: str, when: datetime) -> AnalyticsEvent:
    return AnalyticsEvent.new(tenant_id=tenant, producer="tests", name=name, occurred_at=when)


def audit(tenant: str, action: str, when: datetime) -> AuditEvent:
    return AuditEvent.new(
        tenant_id=tenant,
        producer="tests",
        actor_id="user-1",
        action=action,
        resource_type="invoice",
        resource_id="inv-1",
        outcome=AuditOutcome.SUCCESS,
        occurred_at=when,
    )


def produce(settings: Settings, items: Iterable[tuple[str, Event | bytes, bytes | None]]) -> int:
    """Publish ``(topic, event or raw value, key)`` items (key None: the event's key).

    Uncompressed: aiokafka reads lz4 batches only with ``cramjam``, absent here.
    """
    serializer = EventSerializer()
    producer = kafka_producer(settings, **{"compression.type": "none"})
    count = 0
    for topic, item, key in items:
        if isinstance(item, bytes):
            producer.produce(topic, value=item, key=key)
        else:
            value = serializer.serialize(item, topic)
            producer.produce(topic, value=value, key=item.key if key is None else key)
        count += 1
        if count % 5000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    return count


def expected_windows(events: Iterable[AnalyticsEvent | AuditEvent]) -> dict[WindowRow, int]:
    """The live counts of `events`: one-minute and five-minute (hopping) windows."""
    counts: Counter[WindowRow] = Counter()
    for event in events:
        minute = event.occurred_at.replace(second=0, microsecond=0)
        counts[(60, minute, event.tenant_id, event.event_type)] += 1
        for back in range(5):
            start = minute - timedelta(minutes=back)
            counts[(300, start, event.tenant_id, event.event_type)] += 1
    return dict(counts)


def action_counts(
    events: Iterable[AnalyticsEvent | AuditEvent], tenant: str, minute: datetime
) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for event in events:
        if event.tenant_id == tenant and event.occurred_at.replace(second=0) == minute:
            counts[event.action if isinstance(event, AuditEvent) else event.name] += 1
    return dict(counts)


def snapshot_rows(conn: psycopg.Connection[Any], schema: str) -> dict[WindowRow, int]:
    query = sql.SQL(
        "SELECT window_seconds, window_start, tenant_id, event_type, events FROM {}"
    ).format(sql.Identifier(schema, "live_window_counts"))
    return {
        (seconds, start.astimezone(UTC), tenant, kind): events
        for seconds, start, tenant, kind, events in conn.execute(query)
    }


def get_json(url: str, timeout: float = 5) -> Any:
    """GET `url` as JSON; a 4xx/5xx answer comes back as ``{"status": code, ...}``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **json.load(exc)}


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` (matching `labels`) in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local
            return str(response.read().decode())
    except OSError:
        return ""


def worker_process(
    settings: Settings, options: LiveAnalyticsOptions, *, log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """The worker as a real child process (``run_live_analytics`` via ``worker_main``),
    and the base URL of its ``/metrics`` and probes once it listens there (it binds port
    0 and reports the port in a ready file next to ``log``)."""
    payload = asdict(options)
    payload["spike"] = asdict(options.spike)
    payload["data_dir"] = str(options.data_dir) if options.data_dir else None
    ready = ReadyFile(log.parent, f"{log.stem}-metrics")
    env = child_environment(
        settings,
        extra={
            "SIDESTREAM_METRICS_PORT": "0",
            "SIDESTREAM_LOG_FORMAT": "console",
            **ready.env(),
        },
    )
    command = [
        sys.executable,
        "-m",
        "tests.consumers.live_analytics.worker_main",
        json.dumps(payload),
    ]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=Path.cwd()
        )
    try:
        address = ready.wait(process, "metrics", timeout=60, log=log)
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return process, f"http://{address}"
