"""The Dead letters page: classes and a decoded letter, a dry-run preview, a confirmed
redrive that lands each fixed record once, refusals, and the audit event it leaves; the
first view of a large topic while the background index reads it."""

from __future__ import annotations

import dataclasses
import html
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from consumers import dead_letter_topic
from consumers.embedded import EmbeddedWorker
from consumers.ops import redriven_positions
from producers import EventPublisher
from schemas import AuditEvent, EventDeserializer
from services.console import AuditTrail, Pipeline, create_app
from tests.consumers.ops.support import ops_clients, produce_stamped, read_topic, topic_size
from tests.consumers.support import count_rows
from tests.services.console.conftest import (
    OPERATOR_KEY,
    VERIFIER,
    ConsoleEnv,
    csrf_of,
    fill_dead_letter_topic,
    gated_console,
    signed_in,
)
from tests.support.cli import run_cli
from tests.support.events import audit_event
from tests.support.waiting import wait_for

CHECK_3 = r"CheckViolation</strong></td><td class=\"num\">3<"


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

    # The index reads the new letters in the background: the page shows them shortly.
    assert wait_for(
        lambda: bool(re.search(CHECK_3, operator.get("/dead-letters").text)), timeout=30
    )
    overview = operator.get("/dead-letters")
    assert env.dlq in overview.text
    assert "data-indexing" not in overview.text  # complete: counts not marked partial
    assert re.search(r"DecodeError</strong></td><td class=\"num\">1<", overview.text)

    page = operator.get(f"/dead-letters/{env.dlq}")
    assert re.search(CHECK_3, page.text)
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


def _page_counts(html: str) -> dict[str, tuple[int, int, int]]:
    """error class → (count, redriven, at cap) as the topic page shows them."""
    cells = r"<td[^>]*>(?:≥ )?([\d,]+)</td>\s*"
    found = re.findall(rf"<strong>(\w+)</strong></td>{cells}{cells}{cells}", html)
    return {name: tuple(int(n.replace(",", "")) for n in ns) for name, *ns in found}  # type: ignore[misc]


def _cli_counts(stdout: str) -> dict[str, tuple[int, int, int]]:
    """error class → (count, redriven, at cap) from `sidestream dlq show`'s table."""
    rows = re.findall(r"(\w+)\s*│\s*([\d,]+)\s*│\s*([\d,]+)\s*│\s*([\d,]+)\s*│", stdout)
    return {name: tuple(int(n.replace(",", "")) for n in ns) for name, *ns in rows}  # type: ignore[misc]


def test_first_view_of_a_large_topic_is_partial_at_once_then_complete_as_dlq_show(
    console_env: ConsoleEnv, pg_conn: psycopg.Connection[Any]
) -> None:
    """The index reads the topic in the background: the first view shows how far it got
    (counts marked partial, no redrive form) and refreshes until complete; the complete
    counts are `sidestream dlq show`'s. A preview meanwhile reads the topic whole."""
    env, n, stamp = console_env, 3000, int(time.time() * 1000)
    fill_dead_letter_topic(env.settings, env.topic, env.dlq, n, stamp)
    # A tenth were redriven once already (the ledger matches them by position and stamp).
    pg_conn.execute(
        f"""INSERT INTO "{env.schema}".dlq_redrives (dlq_topic, dlq_partition, dlq_offset,
                dlq_timestamp_ms, source_topic, source_partition, source_offset, value_digest,
                error_class, redrive_count, redriven_by)
            SELECT %s, 0, g, %s, %s, 0, g, '\\x00', 'CheckViolation', 1, 'test'
              FROM generate_series(0, %s - 1, 10) AS g""",
        (env.dlq, stamp, env.topic, n),
    )
    # The index's reader is a real one that stops after 1,000 letters until the gate
    # opens: the test sees the partial state for as long as it needs to.
    gate = threading.Event()
    app, publisher = gated_console(env, gate, after=1000)
    try:
        with TestClient(app) as client:
            operator = signed_in(client, OPERATOR_KEY)
            url = f"/dead-letters/{env.dlq}"
            first = operator.get(url)
            assert first.status_code == 200
            assert "data-indexing" in first.text  # returned without waiting for the read
            assert f'data-refresh="{url}/classes"' in first.text
            assert wait_for(
                lambda: "indexing: 1,000 of ~3,000" in operator.get(url).text, timeout=60
            )
            partial = operator.get(f"{url}/classes")
            assert "≥ 250" in partial.text  # 1,000 letters over four classes, marked partial
            assert "Preview redrive" not in partial.text  # no redrive from a partial index
            overview = operator.get("/dead-letters")
            assert 'data-refresh="/dead-letters/table"' in overview.text
            assert "1,000 of ~3,000" in overview.text

            # A preview meanwhile reads the whole topic, not the partial index.
            shown = operator.post(
                f"{url}/preview",
                data={"csrf": csrf_of(first.text), "error_class": "CheckViolation"},
            )
            assert shown.status_code == 200
            # 750 CheckViolation letters (i % 4 == 0) less those in the ledger (i % 10 == 0)
            # or at the cap (i % 9 == 0): 533, of which the partial index holds 250.
            would = len([i for i in range(0, n, 4) if i % 10 and i % 9])
            assert would == 533
            assert f"would redrive <strong>{would}</strong>" in shown.text

            gate.set()
            assert wait_for(lambda: "data-indexing" not in operator.get(url).text, timeout=120)
            complete = operator.get(url)
            assert "Preview redrive" in complete.text
            assert "≥" not in complete.text
            assert "data-refresh=" not in complete.text
            assert "data-indexing" not in operator.get("/dead-letters/table").text
    finally:
        gate.set()
        publisher.close(10)

    cli = run_cli(env.settings, "dlq_cmd", "show", env.topic, "--schema", env.schema)
    assert cli.returncode == 0, cli.stderr
    expected = _cli_counts(cli.stdout)
    assert sum(count for count, _r, _c in expected.values()) == n
    assert _page_counts(complete.text) == expected


def _text(response: Any) -> str:
    return html.unescape(response.text)


def test_a_missing_dead_letter_topic_is_one_line_on_the_page_until_it_exists(
    console_env: ConsoleEnv, make_topic: Callable[..., str], unique: Callable[[str], str]
) -> None:
    env = console_env
    topic = make_topic("orphan", partitions=1)  # its .dlq is not created yet
    dlq = dead_letter_topic(topic)
    pipeline = Pipeline("orphan", unique("g"), (topic,), "audit_events", sink="audit")
    config = dataclasses.replace(env.config, pipelines=(pipeline,))
    publisher = EventPublisher(
        settings=env.settings, producer="console-tests", registry=CollectorRegistry()
    )
    app = create_app(
        env.settings, config, verifier=VERIFIER, audit=AuditTrail(publisher, topic=env.audit_topic)
    )
    try:
        with TestClient(app) as client:
            operator = signed_in(client, OPERATOR_KEY)
            missing = f"indexing {dlq}: TopicNotFoundError: topic '{dlq}' does not exist"
            assert wait_for(
                lambda: missing in _text(operator.get(f"/dead-letters/{dlq}")), timeout=30
            )
            assert (
                "not indexed yet: the last attempt failed"
                in operator.get(f"/dead-letters/{dlq}").text
            )
            assert missing in _text(operator.get("/dead-letters"))

            make_topic(name=dlq, partitions=1)
            # The next views retry at once: the topic is indexed, empty, the problem gone.
            assert wait_for(
                lambda: "no dead letters" in operator.get(f"/dead-letters/{dlq}").text,
                timeout=60,
            )
            page = operator.get(f"/dead-letters/{dlq}").text
            assert "TopicNotFoundError" not in page
            assert "data-indexing" not in page
    finally:
        publisher.close(10)
