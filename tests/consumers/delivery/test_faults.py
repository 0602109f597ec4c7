"""Delivery workers under concurrency and crashes: claims are exclusive, a SIGKILLed
worker costs at most one extra attempt per notification, with the same idempotency key."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runtime import Settings
from runtime.environment import child_environment
from tests.consumers.delivery.conftest import StartWorker
from tests.consumers.delivery.support import (
    Reply,
    WebhookReceiver,
    all_in,
    attempts_of,
    insert_notifications,
    webhook,
)
from tests.support.waiting import wait_for

Receiver = Callable[..., WebhookReceiver]


def test_two_workers_never_send_one_notification_concurrently(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver(lambda _req, _n: Reply(200, hold_s=0.05))
    ids = insert_notifications(db, [webhook(server.url()) for _ in range(150)])
    options = {"per_host_concurrency": 4, "claim_batch": 8, "max_in_flight": 16}
    first = start_worker(**options)
    second = start_worker(**options)
    assert wait_for(lambda: all_in(db, ids, "sent"), timeout=90)

    counts = server.counts()
    assert set(counts) == {str(i) for i in ids}
    assert set(counts.values()) == {1}  # no crash: exactly once
    assert max(server.max_concurrent.values()) == 1
    workers = {
        row[0] for row in db.execute("SELECT DISTINCT worker FROM notification_attempts").fetchall()
    }
    assert workers == {first.worker_id, second.worker_id}  # both took part


def _worker_process(
    settings: Settings, schema: str, topic: str, worker_id: str, log: Path
) -> subprocess.Popen[bytes]:
    """``python -m consumers.delivery`` as a real child process."""
    config = {
        "webhook_timeout_s": 1.0,
        "smtp_timeout_s": 1.0,
        "lease_s": 4.0,
        "lease_margin_s": 0.5,
        "per_host_concurrency": 8,
        "claim_batch": 8,
        "max_in_flight": 16,
        "backoff_base_s": 0.05,
        "poll_interval_s": 0.5,
        "allow_private_targets": True,  # the receiver listens on 127.0.0.1
    }
    command = [
        sys.executable,
        "-m",
        "consumers.delivery",
        "--schema",
        schema,
        "--config",
        json.dumps(config),
        "--dead-letter-topic",
        topic,
        "--worker-id",
        worker_id,
    ]
    env = child_environment(settings, extra={"SIDESTREAM_LOG_FORMAT": "json"})
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.chaos
def test_sigkill_mid_batch_costs_at_most_one_extra_attempt_with_the_same_key(
    stack_settings: Settings,
    db: psycopg.Connection[Any],
    delivery_schema: str,
    dlq_topic: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    server = receiver(lambda _req, _n: Reply(200, hold_s=0.2))
    ids = insert_notifications(db, [webhook(server.url()) for _ in range(120)])
    log = tmp_path / "workers.log"
    victim = _worker_process(stack_settings, delivery_schema, dlq_topic, "victim", log)
    try:
        assert wait_for(
            lambda: len(server.snapshot()) >= 30 and server.in_progress() > 0, timeout=60
        ), log.read_text()[-3000:]
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    finally:
        victim.kill()
    held = {
        row[0]
        for row in db.execute(
            "SELECT notification_id FROM notifications WHERE status = 'sending'"
        ).fetchall()
    }
    assert held, "the worker was killed mid-batch: some rows are still claimed"

    survivor = _worker_process(stack_settings, delivery_schema, dlq_topic, "survivor", log)
    try:
        assert wait_for(lambda: all_in(db, ids, "sent"), timeout=90), log.read_text()[-3000:]
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        survivor.kill()

    counts = server.counts()
    assert set(counts) == {str(i) for i in ids}  # every one arrived…
    assert max(counts.values()) <= 2  # …at most twice
    duplicated = {uuid.UUID(key) for key, n in counts.items() if n == 2}
    assert duplicated <= held  # only rows whose claim died with the worker
    for nid in duplicated:
        attempts = attempts_of(db, nid)
        # The victim's attempt is recorded as abandoned by the worker that took over.
        assert (attempts[0]["outcome"], attempts[0]["worker"]) == ("abandoned", "victim")
        assert (attempts[-1]["outcome"], attempts[-1]["worker"]) == ("sent", "survivor")
    requests = server.snapshot()
    assert all(r.key == r.json()["notification_id"] for r in requests)
    assert max(server.max_concurrent.values()) == 1
