"""Email delivery against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from tests.consumers.delivery.conftest import StartWorker
from tests.consumers.delivery.support import (
    SmtpSink,
    attempts_of,
    email,
    insert_notifications,
    row_of,
    status_of,
)
from tests.support.waiting import wait_for

Smtp = Callable[..., SmtpSink]


def test_email_arrives_with_a_text_and_an_html_part(
    db: psycopg.Connection[Any], smtp: Smtp, start_worker: StartWorker
) -> None:
    server = smtp()
    params = {"invoice_id": "inv-42", "amount": "<5 € & tax>"}
    [nid] = insert_notifications(
        db, [email("ada@example.test", template="invoice_ready", params=params)]
    )
    worker = start_worker(smtp_port=server.port)
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)

    [mail] = server.snapshot()
    assert mail.rcpt_tos == ["ada@example.test"]
    message = mail.message
    assert message["To"] == "ada@example.test"
    assert message["Subject"] == "Invoice inv-42 is ready"
    assert message["Message-ID"] == f"<{nid}@sidestream.local>"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "invoice inv-42 for <5 € & tax> is ready" in text.get_content()
    assert "&lt;5 € &amp; tax&gt;" in html.get_content()  # escaped in HTML only
    [attempt] = attempts_of(db, nid)
    assert (attempt["outcome"], attempt["status_code"], attempt["destination"]) == (
        "sent",
        250,
        "smtp",
    )
    assert worker.metric("sidestream_delivery_sent_total", channel="email") == 1


def test_a_refused_recipient_fails_permanently_and_a_busy_one_is_retried(
    db: psycopg.Connection[Any], smtp: Smtp, start_worker: StartWorker
) -> None:
    def rcpt(address: str, n: int) -> str | None:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("busy@") and n == 1:
            return "451 4.3.0 try again later"
        return None

    server = smtp(rcpt)
    nobody, busy = insert_notifications(
        db, [email("nobody@example.test"), email("busy@example.test")]
    )
    start_worker(smtp_port=server.port)
    assert wait_for(lambda: status_of(db, nobody) == "failed", timeout=30)
    assert wait_for(lambda: status_of(db, busy) == "sent", timeout=30)

    row = row_of(db, nobody)
    assert (row["failure_reason"], row["attempts"]) == ("permanent", 1)
    [refused] = attempts_of(db, nobody)
    assert (refused["status_code"], refused["error_class"]) == (550, "smtp_5xx")
    assert [(a["status_code"], a["outcome"]) for a in attempts_of(db, busy)] == [
        (451, "transient"),
        (250, "sent"),
    ]
    assert [m.rcpt_tos for m in server.snapshot()] == [["busy@example.test"]]


def test_unknown_template_and_missing_parameter_fail_without_contacting_the_server(
    db: psycopg.Connection[Any], smtp: Smtp, start_worker: StartWorker
) -> None:
    server = smtp()
    unknown, missing = insert_notifications(
        db,
        [
            email("a@example.test", template="no_such_template"),
            email("b@example.test", template="password_reset", params={"reset_url": "x"}),
        ],
    )
    start_worker(smtp_port=server.port)
    assert wait_for(lambda: status_of(db, missing) == "failed", timeout=30)
    assert wait_for(lambda: status_of(db, unknown) == "failed", timeout=30)
    assert "unknown template" in row_of(db, unknown)["last_error"]
    assert "missing parameter 'expires_in'" in row_of(db, missing)["last_error"]
    assert [a["error_class"] for a in attempts_of(db, missing)] == ["template"]
    assert server.snapshot() == []


def test_an_unreachable_smtp_server_is_retried(
    db: psycopg.Connection[Any], smtp: Smtp, start_worker: StartWorker, nowhere_port: int
) -> None:
    [nid] = insert_notifications(db, [email("c@example.test")])
    start_worker(smtp_port=nowhere_port, max_attempts=2)
    assert wait_for(lambda: status_of(db, nid) == "failed", timeout=30)
    assert [a["error_class"] for a in attempts_of(db, nid)] == ["connect", "connect"]
    assert row_of(db, nid)["failure_reason"] == "exhausted"
