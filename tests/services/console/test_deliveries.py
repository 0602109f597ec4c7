"""The Deliveries page: counts by status, one notification's attempts, a destination's
latencies and circuit, and a retry of failed notifications (operators only, audited)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from runtime.clients import postgres_connect
from schemas import AuditEvent, EventDeserializer
from tests.consumers.delivery.support import insert_notifications, webhook
from tests.consumers.ops.support import ops_clients, read_topic, topic_size
from tests.services.console.conftest import ConsoleEnv, csrf_of
from tests.support.waiting import wait_for


@pytest.fixture
def db(console_env: ConsoleEnv) -> Iterator[psycopg.Connection[Any]]:
    with postgres_connect(console_env.settings, schema=console_env.schema, autocommit=True) as conn:
        yield conn


def failed_notifications(db: psycopg.Connection[Any]) -> list[uuid.UUID]:
    """Four webhooks to one host: two sent, two failed after five 503s in a row."""
    ids = insert_notifications(db, [webhook("http://hooks.example.test/x")] * 4)
    for number, notification_id in enumerate(ids):
        failing = number >= 2
        attempts = 5 if failing else 1
        for attempt in range(1, attempts + 1):
            db.execute(
                """
                INSERT INTO notification_attempts (notification_id, attempt, worker,
                    destination, started_at, finished_at, latency_ms, outcome, status_code)
                VALUES (%s, %s, 'w-1', 'hooks.example.test', now() - make_interval(secs => %s),
                        now() - make_interval(secs => %s), %s, %s, %s)
                """,
                (
                    notification_id,
                    attempt,
                    100 - number * 10 - attempt,
                    100 - number * 10 - attempt,
                    20.0 + attempt,
                    "transient" if failing else "sent",
                    503 if failing else 200,
                ),
            )
        db.execute(
            "UPDATE notifications SET status = %s, attempts = %s, failure_reason = %s,"
            " last_error = %s WHERE notification_id = %s",
            (
                "failed" if failing else "sent",
                attempts,
                "exhausted" if failing else None,
                "503 Service Unavailable" if failing else None,
                notification_id,
            ),
        )
    return ids


def test_counts_attempts_circuit_and_a_retry(
    console_env: ConsoleEnv, operator: TestClient, reader: TestClient, db: psycopg.Connection[Any]
) -> None:
    ids = failed_notifications(db)
    page = operator.get("/deliveries")
    assert re.search(r'data-status="failed">.*?<div class="big">2<', page.text, re.S)
    assert re.search(r'data-status="sent">.*?<div class="big">2<', page.text, re.S)
    destination = re.search(
        r'<tr data-destination="hooks.example.test">(.*?)</tr>', page.text, re.S
    )
    assert destination is not None
    assert 'data-testid="circuit">open<' in destination.group(1)  # 5 failures in a row
    assert "<svg" in destination.group(1)  # the latency sparkline

    detail = operator.get(f"/deliveries/{ids[3]}")
    assert detail.text.count("transient") == 5
    assert 'data-testid="status">failed<' in detail.text

    failed = operator.get("/deliveries", params={"status": "failed"})
    form = {"csrf": csrf_of(failed.text), "notification_id": [str(ids[2])]}
    refused = reader.post(
        "/deliveries/retry", data={**form, "csrf": csrf_of(reader.get("/deliveries").text)}
    )
    assert refused.status_code == 403
    done = operator.post("/deliveries/retry", data=form)
    assert "re-queued 1 failed notification" in done.text
    status = db.execute(
        "SELECT status FROM notifications WHERE notification_id = %s", (ids[2],)
    ).fetchone()
    assert status == ("pending",)

    with ops_clients(console_env.settings) as (topic_reader, _groups):
        assert wait_for(lambda: topic_size(topic_reader, console_env.audit_topic) == 1, timeout=30)
        (message,) = read_topic(topic_reader, console_env.audit_topic)
    event = EventDeserializer().deserialize(message.value() or b"", console_env.audit_topic)
    assert isinstance(event, AuditEvent)
    assert (event.action, event.resource_id, event.details["requeued"]) == (
        "console.notifications.retry",
        str(ids[2]),
        "1",
    )
