"""The Dead letters page: classes and a decoded letter, a dry-run preview, a confirmed
redrive that lands each fixed record once, refusals, and the audit event it leaves."""

from __future__ import annotations

import re
import time
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from consumers.embedded import EmbeddedWorker
from consumers.ops import redriven_positions
from schemas import AuditEvent, EventDeserializer
from tests.consumers.ops.support import ops_clients, produce_stamped, read_topic, topic_size
from tests.consumers.support import count_rows
from tests.services.console.conftest import ConsoleEnv, csrf_of
from tests.support.events import audit_event
from tests.support.waiting import wait_for


def make_dead_letters(
    env: ConsoleEnv, worker_threads: Any, pg_conn: psycopg.Connection[Any]
) -> EmbeddedWorker:
    """60 good audit events, 3 the table rejects (empty action), 1 undecodable record;
    returns the (running) worker that landed them."""
    now = int(time.time() * 1000)
    produce_stamped(
        env.settings, env.topic, [audit_event(i) for i in range(60)], stamps_ms=[now] * 60
    )
    bad = [audit_event(1000 + i, action="") for i in range(3)]
    produce_stamped(env.settings, env.topic, bad, stamps_ms=[now] * 3)
    produce_stamped(env.settings, env.topic, [b"not avro at all"], stamps_ms=[now])
    worker: EmbeddedWorker = worker_threads(env.settings, env.options)
    assert wait_for(lambda: count_rows(pg_conn, env.schema, "audit_events") == 60, timeout=60)
    with ops_clients(env.settings) as (reader, _groups):
        assert wait_for(lambda: topic_size(reader, env.dlq) == 4, timeout=30)
    return worker


def test_redrive_from_the_console_after_the_fix_lands_each_record_once(
    console_env: ConsoleEnv,
    operator: TestClient,
    reader: TestClient,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    env = console_env
    make_dead_letters(env, worker_threads, pg_conn)

    overview = operator.get("/dead-letters")
    assert env.dlq in overview.text
    assert re.search(r"CheckViolation</strong></td><td class=\"num\">3<", overview.text)
    assert re.search(r"DecodeError</strong></td><td class=\"num\">1<", overview.text)

    page = operator.get(f"/dead-letters/{env.dlq}")
    sample = re.search(rf"/dead-letters/{re.escape(env.dlq)}/(\d+)/(\d+)", page.text)
    assert sample is not None
    letter = operator.get(sample.group(0))
    assert "AuditEvent" in letter.text or "not avro" in letter.text  # decoded, or shown raw

    # A read-only principal can look but not act; a missing CSRF token is refused too.
    ro_page = reader.get(f"/dead-letters/{env.dlq}")
    assert "disabled" in ro_page.text
    refused = reader.post(
        f"/dead-letters/{env.dlq}/preview",
        data={"csrf": csrf_of(ro_page.text), "error_class": "CheckViolation"},
    )
    assert refused.status_code == 403
    assert "read-only" in refused.text
    forged = operator.post(f"/dead-letters/{env.dlq}/preview", data={"error_class": "X"})
    assert forged.status_code == 403
    assert "CSRF" in forged.text

    csrf = csrf_of(page.text)
    preview = operator.post(
        f"/dead-letters/{env.dlq}/preview", data={"csrf": csrf, "error_class": "CheckViolation"}
    )
    assert preview.status_code == 200
    assert "would redrive <strong>3</strong>" in preview.text
    assert redriven_positions(pg_conn, env.schema, env.dlq) == {}  # a dry run records nothing

    # Without the preview's confirmation nothing runs.
    unconfirmed = operator.post(
        f"/dead-letters/{env.dlq}/redrive", data={"csrf": csrf, "error_class": "CheckViolation"}
    )
    assert unconfirmed.status_code == 400

    # The cause is fixed; the confirmed redrive lands the three rows, once.
    pg_conn.execute(
        f'ALTER TABLE "{env.schema}".audit_events DROP CONSTRAINT audit_events_action_check'
    )
    confirm = {"csrf": csrf, "error_class": "CheckViolation", "confirm": "yes"}
    done = operator.post(f"/dead-letters/{env.dlq}/redrive", data=confirm)
    assert done.status_code == 200  # followed the redirect back to the topic page
    assert "redrove 3" in done.text
    assert wait_for(lambda: count_rows(pg_conn, env.schema, "audit_events") == 63, timeout=60)
    assert len(redriven_positions(pg_conn, env.schema, env.dlq)) == 3
    again = operator.post(f"/dead-letters/{env.dlq}/redrive", data=confirm)
    assert "redrove 0" in again.text
    assert "3 already redriven" in again.text
    time.sleep(2)
    assert count_rows(pg_conn, env.schema, "audit_events") == 63
    assert again.text.count("console:test-operator") == 3  # the ledger names who sent them

    # Both runs were recorded as audit events by the operator.
    with ops_clients(env.settings) as (topic_reader, _groups):
        assert wait_for(lambda: topic_size(topic_reader, env.audit_topic) == 2, timeout=30)
        events = [
            EventDeserializer().deserialize(m.value() or b"", env.audit_topic)
            for m in read_topic(topic_reader, env.audit_topic)
        ]
    assert all(isinstance(e, AuditEvent) for e in events)
    audit = [e for e in events if isinstance(e, AuditEvent)]
    assert {(e.actor_id, e.action, e.resource_id) for e in audit} == {
        ("test-operator", "console.dlq.redrive", env.dlq)
    }
    assert sorted(e.details["redriven"] for e in audit) == ["0", "3"]
