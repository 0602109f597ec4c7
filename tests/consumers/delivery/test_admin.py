"""Operator functions and ``sidestream notifications show|retry`` on a real schema."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from consumers.delivery import (
    list_notifications,
    notification_counts,
    notification_summary,
    retry_failed,
)
from consumers.delivery.admin import destination_health, notification_attempts
from sidestream.notifications_cmd import app
from tests.consumers.delivery.conftest import StartWorker
from tests.consumers.delivery.support import (
    Reply,
    WebhookReceiver,
    attempts_of,
    insert_notifications,
    row_of,
    status_of,
    webhook,
)
from tests.support.waiting import wait_for


def _fail(db: psycopg.Connection[Any], ids: list[uuid.UUID]) -> None:
    db.execute(
        "UPDATE notifications SET status = 'failed', failure_reason = 'exhausted', attempts = 3,"
        " last_error = 'timeout', dead_lettered_at = now() WHERE notification_id = ANY(%s)",
        (ids,),
    )


def test_counts_list_and_summary(db: psycopg.Connection[Any]) -> None:
    assert notification_counts(db) == {"pending": 0, "sending": 0, "sent": 0, "failed": 0}
    ids = insert_notifications(db, [webhook(f"http://127.0.0.1:1/{i}") for i in range(5)])
    _fail(db, ids[:2])
    assert notification_counts(db) == {"pending": 3, "sending": 0, "sent": 0, "failed": 2}
    failed = list_notifications(db, "failed", limit=10)
    assert sorted(n.notification_id for n in failed) == sorted(ids[:2])
    assert {(n.failure_reason, n.attempts) for n in failed} == {("exhausted", 3)}
    assert len(list_notifications(db, None, limit=4)) == 4
    summary = notification_summary(db)
    assert (summary["failed"], summary["dead_lettered"], summary["attempts"]) == (2, 2, 0)
    with pytest.raises(ValueError, match="unknown status"):
        list_notifications(db, "lost", limit=1)


def test_retry_failed_by_id_and_all(db: psycopg.Connection[Any]) -> None:
    ids = insert_notifications(db, [webhook(f"http://127.0.0.1:1/{i}") for i in range(4)])
    _fail(db, ids)
    assert retry_failed(db, [ids[0], str(ids[1])]) == 2
    assert retry_failed(db, [ids[0]]) == 0  # pending now: not failed any more
    row = row_of(db, ids[0])
    assert (row["status"], row["budget_attempts_base"], row["failure_reason"]) == (
        "pending",
        3,
        None,
    )
    assert row["dead_lettered_at"] is None
    assert retry_failed(db, "all") == 2
    assert notification_counts(db)["failed"] == 0
    with pytest.raises(ValueError, match="UUID"):
        retry_failed(db, ["not-a-uuid"])


def test_a_retried_notification_gets_a_fresh_budget(
    db: psycopg.Connection[Any],
    receiver: Callable[..., WebhookReceiver],
    start_worker: StartWorker,
) -> None:
    server = receiver(lambda _req, n: Reply(503) if n <= 2 else Reply(200))
    [nid] = insert_notifications(db, [webhook(server.url())])
    start_worker(max_attempts=2)
    assert wait_for(lambda: status_of(db, nid) == "failed", timeout=30)
    assert row_of(db, nid)["failure_reason"] == "exhausted"

    assert retry_failed(db, [nid]) == 1
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)
    assert [(a["attempt"], a["status_code"]) for a in attempts_of(db, nid)] == [
        (1, 503),
        (2, 503),
        (3, 200),
    ]


def test_cli_show_and_retry(db: psycopg.Connection[Any], delivery_schema: str) -> None:
    ids = insert_notifications(db, [webhook(f"http://127.0.0.1:1/{i}") for i in range(3)])
    _fail(db, ids[:1])
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "--status", "failed", "--schema", delivery_schema])
    assert shown.exit_code == 0, shown.output
    assert "pending: 2" in shown.output
    assert "failed: 1" in shown.output
    assert str(ids[0])[:8] in shown.output

    retried = runner.invoke(app, ["retry", str(ids[0]), "--schema", delivery_schema])
    assert retried.exit_code == 0, retried.output
    assert "1 notification(s) pending again" in retried.output
    assert status_of(db, ids[0]) == "pending"
    neither = runner.invoke(app, ["retry", "--schema", delivery_schema])
    assert neither.exit_code != 0


def _attempt(
    db: psycopg.Connection[Any],
    notification_id: uuid.UUID,
    attempt: int,
    outcome: str,
    ms: float,
    *,
    ago_s: float,
) -> None:
    db.execute(
        """
        INSERT INTO notification_attempts (notification_id, attempt, worker, destination,
            started_at, finished_at, latency_ms, outcome, status_code, error_class, error)
        VALUES (%s, %s, 'w-1', '127.0.0.1:1', now() - make_interval(secs => %s),
                now() - make_interval(secs => %s), %s, %s, %s, %s, %s)
        """,
        (
            notification_id,
            attempt,
            ago_s,
            ago_s,
            ms,
            outcome,
            200 if outcome == "sent" else 503,
            None if outcome == "sent" else "http_5xx",
            None if outcome == "sent" else "503 Service Unavailable",
        ),
    )


def test_attempt_history_and_destination_health(db: psycopg.Connection[Any]) -> None:
    (first, second) = insert_notifications(db, [webhook("http://127.0.0.1:1/a")] * 2)
    _attempt(db, first, 1, "sent", 12.0, ago_s=60)
    for number, ms in enumerate((30.0, 40.0, 50.0), start=1):
        _attempt(db, second, number, "transient", ms, ago_s=10 - number)
    found, attempts = notification_attempts(db, second)
    assert found is not None
    assert found.notification_id == second
    assert [(a.attempt, a.outcome, a.status_code) for a in attempts] == [
        (1, "transient", 503),
        (2, "transient", 503),
        (3, "transient", 503),
    ]
    assert notification_attempts(db, uuid.uuid4()) == (None, [])
    (health,) = destination_health(db)
    assert (health.destination, health.attempts, health.sent, health.failed) == (
        "127.0.0.1:1",
        4,
        1,
        3,
    )
    assert health.consecutive_failures == 3  # since the last success
    assert health.circuit(3) == "open"
    assert health.circuit(4) == "closed"
    assert health.recent_latencies_ms == (12.0, 30.0, 40.0, 50.0)
