"""Webhook delivery against a real HTTP server: success, retries, permanent failures,
Retry-After, timeouts, dead letters, and one dead host next to a healthy one."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumers.delivery import SchemaNotReadyError, SignatureError, run_notify_worker, verify
from consumers.delivery.webhook import NETWORK_ERROR
from consumers.runtime import ExitStatus
from runtime import Settings
from tests.consumers.delivery.conftest import SECRET, StartWorker
from tests.consumers.delivery.support import (
    ENDPOINT_SECRET,
    Reply,
    WebhookReceiver,
    all_in,
    attempts_of,
    destinations,
    insert_notifications,
    row_of,
    status_of,
    statuses,
    webhook,
)
from tests.consumers.support import read_all
from tests.support.waiting import wait_for

Receiver = Callable[..., WebhookReceiver]


def test_success_posts_a_signed_body_with_an_idempotency_key(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    [nid] = insert_notifications(
        db, [webhook(server.url("/ok"), template="invoice_paid", params={"invoice": "inv-7"})]
    )
    worker = start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)

    [request] = server.snapshot()
    assert request.key == str(nid)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["sidestream-attempt"] == "1"
    verify(ENDPOINT_SECRET, request.headers["sidestream-signature"], request.body)
    with pytest.raises(SignatureError):  # signed with the endpoint's secret only
        verify(SECRET, request.headers["sidestream-signature"], request.body)
    body = request.json()
    assert body["notification_id"] == str(nid)
    assert body["template"] == "invoice_paid"
    assert body["params"] == {"invoice": "inv-7"}

    row = row_of(db, nid)
    assert (row["attempts"], row["claimed_by"], row["lease_until"]) == (1, None, None)
    assert row["sent_at"] is not None
    [attempt] = attempts_of(db, nid)
    assert (attempt["outcome"], attempt["status_code"], attempt["worker"]) == (
        "sent",
        200,
        worker.worker_id,
    )
    assert attempt["latency_ms"] is not None
    assert attempt["destination"] == f"endpoint:{row['endpoint_id']}"
    assert attempt["reply"] is None  # the reply body is never stored
    assert worker.metric("sidestream_delivery_sent_total", channel="webhook") == 1


def test_500_is_retried_with_backoff_until_it_succeeds(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver(lambda _req, n: Reply(500) if n <= 2 else Reply(200))
    [nid] = insert_notifications(db, [webhook(server.url("/flaky"))])
    worker = start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)

    requests = server.snapshot()
    assert [r.key for r in requests] == [str(nid)] * 3  # same key on every attempt
    assert [r.headers["sidestream-attempt"] for r in requests] == ["1", "2", "3"]
    assert len({r.body for r in requests}) == 1  # the same body every time
    attempts = attempts_of(db, nid)
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "transient", 500),
        (2, "transient", 500),
        (3, "sent", 200),
    ]
    # Each retry waited for its predecessor's result (a backoff, not a burst).
    for before, after in itertools.pairwise(attempts):
        assert after["started_at"] >= before["finished_at"]
    assert worker.metric("sidestream_delivery_retried_total", channel="webhook") == 2
    assert worker.metric("sidestream_delivery_sent_total", channel="webhook") == 1


def test_400_fails_permanently_without_retry_and_is_dead_lettered(
    stack_settings: Settings,
    db: psycopg.Connection[Any],
    receiver: Receiver,
    start_worker: StartWorker,
    dlq_topic: str,
) -> None:
    server = receiver(lambda _req, _n: Reply(400))
    [nid] = insert_notifications(db, [webhook(server.url("/bad"))])
    worker = start_worker()
    assert wait_for(lambda: row_of(db, nid)["dead_lettered_at"] is not None, timeout=30)

    row = row_of(db, nid)
    assert (row["status"], row["failure_reason"], row["attempts"]) == ("failed", "permanent", 1)
    assert "http_4xx: 400" in row["last_error"]
    assert len(server.snapshot()) == 1
    assert (
        worker.metric("sidestream_delivery_failed_total", channel="webhook", reason="permanent")
        == 1
    )

    [message] = read_all(stack_settings, dlq_topic, expect=1)
    assert message.key() == str(nid).encode()
    headers = dict(message.headers() or [])
    assert headers["sidestream.dlq.error.class"] == b"permanent"
    assert headers["sidestream.dlq.source.table"] == b"notifications"
    value = json.loads(message.value() or b"")
    assert value["notification"]["notification_id"] == str(nid)
    assert value["failure_reason"] == "permanent"
    assert [(a["attempt"], a["status_code"]) for a in value["attempts"]] == [(1, 400)]


def test_429_waits_for_retry_after(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver(lambda _req, n: Reply(429, {"Retry-After": "1"}) if n == 1 else Reply(200))
    [nid] = insert_notifications(db, [webhook(server.url("/throttled"))])
    # Without Retry-After, the retry would come after at most 10 ms.
    start_worker(backoff_base_s=0.01, backoff_cap_s=0.01)
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)

    first, second = server.snapshot()
    assert second.at - first.at >= 0.95  # the 1 s the server asked for (monotonic clock)
    [throttled, sent] = attempts_of(db, nid)
    assert (throttled["status_code"], throttled["error_class"]) == (429, "http_429")
    assert sent["outcome"] == "sent"


def test_a_hanging_endpoint_times_out_and_exhausts_its_attempts(
    stack_settings: Settings,
    db: psycopg.Connection[Any],
    receiver: Receiver,
    start_worker: StartWorker,
    dlq_topic: str,
) -> None:
    server = receiver(lambda _req, _n: Reply(200, hold_s=30))
    [nid] = insert_notifications(db, [webhook(server.url("/hang"))])
    worker = start_worker(webhook_timeout_s=0.5, max_attempts=2)
    assert wait_for(lambda: row_of(db, nid)["dead_lettered_at"] is not None, timeout=30)

    row = row_of(db, nid)
    assert (row["status"], row["failure_reason"], row["attempts"]) == ("failed", "exhausted", 2)
    attempts = attempts_of(db, nid)
    assert [(a["outcome"], a["error_class"]) for a in attempts] == [("transient", "network")] * 2
    assert len(server.snapshot()) == 2
    assert (
        worker.metric("sidestream_delivery_failed_total", channel="webhook", reason="exhausted")
        == 1
    )

    [message] = read_all(stack_settings, dlq_topic, expect=1)
    value = json.loads(message.value() or b"")
    assert [a["error_class"] for a in value["attempts"]] == ["network", "network"]


def test_connection_refused_is_retried(
    db: psycopg.Connection[Any], start_worker: StartWorker, nowhere_port: int
) -> None:
    [nid] = insert_notifications(db, [webhook(f"http://127.0.0.1:{nowhere_port}/nobody")])
    start_worker(max_attempts=2)
    assert wait_for(lambda: status_of(db, nid) == "failed", timeout=30)
    attempts = attempts_of(db, nid)
    assert [a["error_class"] for a in attempts] == ["network", "network"]
    # Refused, timed out or cut: one message, so last_error cannot probe ports.
    assert {a["error"] for a in attempts} == {NETWORK_ERROR}


def test_a_dead_host_does_not_delay_a_healthy_one(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    dead = receiver(lambda _req, _n: Reply(200, hold_s=60))
    healthy = receiver()
    # The dead host's rows are older, so they are claimed first.
    dead_ids = insert_notifications(db, [webhook(dead.url(), delay_s=-60) for _ in range(10)])
    healthy_ids = insert_notifications(db, [webhook(healthy.url()) for _ in range(20)])
    start_worker(
        webhook_timeout_s=8.0,
        lease_s=20.0,
        per_host_concurrency=2,
        claim_batch=4,
        max_in_flight=8,
        shutdown_deadline_s=1.0,
    )
    assert wait_for(lambda: all_in(db, healthy_ids, "sent"), timeout=30)
    # Every healthy delivery finished while the dead host's first requests were still
    # hanging: none of them had to wait for a dead-host timeout.
    [dead_destination] = destinations(db, dead_ids)
    finished = db.execute(
        "SELECT count(*) FROM notification_attempts WHERE destination = %s", (dead_destination,)
    ).fetchone()
    assert finished == (0,)
    assert 1 <= len(dead.snapshot()) <= 2  # per-host cap
    assert len(healthy.snapshot()) == 20
    assert statuses(db, dead_ids).get("sent", 0) == 0


def test_an_open_circuit_reschedules_without_attempts(
    db: psycopg.Connection[Any], start_worker: StartWorker, nowhere_port: int
) -> None:
    url = f"http://127.0.0.1:{nowhere_port}/refused"
    ids = insert_notifications(db, [webhook(url) for _ in range(10)])
    worker = start_worker(
        circuit_failure_threshold=3, circuit_cooldown_s=60.0, per_host_concurrency=1
    )

    def all_deferred() -> bool:
        row = db.execute(
            "SELECT count(*) FROM notifications WHERE notification_id = ANY(%s)"
            " AND status = 'pending' AND next_attempt_at > now() + interval '30 seconds'",
            (ids,),
        ).fetchone()
        return row == (10,)

    assert wait_for(all_deferred, timeout=30)
    attempts = db.execute("SELECT count(*) FROM notification_attempts").fetchone()
    assert attempts == (3,)  # the threshold; then the circuit opened
    total = db.execute(
        "SELECT sum(attempts) FROM notifications WHERE notification_id = ANY(%s)", (ids,)
    ).fetchone()
    assert total == (3,)  # deferrals are not attempts
    assert worker.metric("sidestream_delivery_open_circuits") == 1
    assert (
        worker.metric(
            "sidestream_delivery_deferred_total", channel="webhook", reason="circuit_open"
        )
        >= 9
    )


def test_an_expired_lease_is_claimed_again_with_the_same_key(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    [nid] = insert_notifications(db, [webhook(server.url(), delay_s=3600)])
    # A worker claimed it, started attempt 1 and died: its lease has run out.
    db.execute(
        "UPDATE notifications SET status = 'sending', claimed_by = 'ghost', attempts = 1,"
        " lease_until = now() - interval '1 second', next_attempt_at = now()"
        " WHERE notification_id = %s",
        (nid,),
    )
    start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)
    [request] = server.snapshot()
    assert (request.key, request.headers["sidestream-attempt"]) == (str(nid), "2")
    attempts = attempts_of(db, nid)
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in attempts] == [
        (1, "abandoned", "ghost"),
        (2, "sent", attempts[1]["worker"]),
    ]
    assert attempts[1]["worker"] != "ghost"


def test_a_live_lease_is_not_claimed(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    held, free = insert_notifications(db, [webhook(server.url()), webhook(server.url())])
    db.execute(
        "UPDATE notifications SET status = 'sending', claimed_by = 'other', attempts = 1,"
        " lease_until = now() + interval '1 hour' WHERE notification_id = %s",
        (held,),
    )
    start_worker()
    assert wait_for(lambda: status_of(db, free) == "sent", timeout=30)
    assert status_of(db, held) == "sending"
    assert [r.key for r in server.snapshot()] == [str(free)]


def test_stop_mid_send_releases_the_claim(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver(lambda _req, _n: Reply(200, hold_s=60))
    [nid] = insert_notifications(db, [webhook(server.url())])
    worker = start_worker(webhook_timeout_s=8.0, lease_s=20.0, shutdown_deadline_s=0.5)
    assert wait_for(lambda: len(server.snapshot()) == 1, timeout=30)
    status = worker.shutdown()
    assert status is ExitStatus.ABANDONED
    row = row_of(db, nid)
    assert (row["status"], row["attempts"], row["claimed_by"]) == ("pending", 1, None)
    [attempt] = attempts_of(db, nid)
    assert (attempt["outcome"], attempt["error_class"]) == ("abandoned", "shutdown")


def test_an_unmigrated_schema_fails_fast_with_the_fix(
    stack_settings: Settings, pg_schema: str, dlq_topic: str
) -> None:
    # The search path falls back to public, which may hold another deployment's tables:
    # the worker must refuse to start rather than deliver those.
    stop = threading.Event()
    timer = threading.Timer(30, stop.set)  # a regression fails the test instead of hanging
    timer.start()
    try:
        with pytest.raises(SchemaNotReadyError, match="sidestream db migrate"):
            run_notify_worker(
                stack_settings,
                stop=stop,
                schema=pg_schema,
                dead_letter_topic=dlq_topic,
                serve_metrics=False,
            )
    finally:
        timer.cancel()
