"""Real receivers for delivery tests: an HTTP server and an SMTP server on 127.0.0.1 (each
binds port 0 and says which port it got), scripted per request; plus helpers to insert
notifications and read results."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from aiosmtpd.smtp import SMTP, Envelope, Session
from psycopg.types.json import Jsonb

from consumers.delivery import SecretBox
from consumers.delivery.endpoints import LOCAL_ENDPOINT_SECRETS_KEY
from devtools.demo import PortZeroController


# --- HTTP ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold_s: float = 0.0
    """Wait this long before answering (ended early when the receiver stops)."""


Responder = Callable[[Received, int], Reply]
"""(request, how many requests this path has had including this one) → reply."""


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default backlog (5) drops bursts of connections


class WebhookReceiver:
    """A threaded HTTP server that records every request, tracks how many requests per
    ``Idempotency-Key`` are in progress at once, and answers as ``responder`` says."""

    def __init__(self, responder: Responder | None = None) -> None:
        self._responder = responder or (lambda _request, _n: Reply())
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.requests: list[Received] = []
        self._per_path: Counter[str] = Counter()
        self._in_progress: Counter[str] = Counter()
        self.max_concurrent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._server = _Server(("127.0.0.1", 0), self._handler())  # bound now: any port
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def destination(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # hanging handlers answer now
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def in_progress(self) -> int:
        with self._lock:
            return sum(self._in_progress.values())

    def counts(self) -> Counter[str]:
        """Requests per idempotency key."""
        with self._lock:
            return Counter(r.key for r in self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    time.monotonic(),
                )
                with receiver._lock:
                    receiver.requests.append(request)
                    receiver._per_path[self.path] += 1
                    n = receiver._per_path[self.path]
                    receiver._in_progress[request.key] += 1
                    receiver.max_concurrent[request.key] = max(
                        receiver.max_concurrent[request.key], receiver._in_progress[request.key]
                    )
                try:
                    reply = receiver._responder(request, n)
                    if reply.hold_s:
                        receiver._released.wait(reply.hold_s)
                    payload = json.dumps({"status": reply.status}).encode()
                    with contextlib.suppress(OSError):  # the client may have given up
                        self.send_response(reply.status)
                        for name, value in reply.headers.items():
                            self.send_header(name, value)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                finally:
                    with receiver._lock:
                        receiver._in_progress[request.key] -= 1
                        receiver.answered[request.key] += 1

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


# --- SMTP ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _SmtpHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._sink.rcpt_reply(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        with self._sink.lock:
            self._sink.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An aiosmtpd server that keeps every message; ``rcpt_reply(address)`` may refuse
    a recipient with a scripted reply (e.g. ``"550 no such user"``)."""

    def __init__(self, rcpt_reply: Callable[[str, int], str | None] | None = None) -> None:
        self.lock = threading.Lock()
        self.mails: list[Mail] = []
        self._rcpt_reply = rcpt_reply
        self._rcpt_counts: Counter[str] = Counter()
        self._controller = PortZeroController(_SmtpHandler(self), hostname="127.0.0.1", port=0)

    def rcpt_reply(self, address: str) -> str | None:
        with self.lock:
            self._rcpt_counts[address] += 1
            n = self._rcpt_counts[address]
        return self._rcpt_reply(address, n) if self._rcpt_reply else None

    @property
    def port(self) -> int:
        """The port it listens on (bound at :meth:`start`)."""
        return int(self._controller.port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def snapshot(self) -> list[Mail]:
        with self.lock:
            return list(self.mails)


# --- the notifications table ----------------------------------------------------------
#: The signing secret of endpoints registered by :func:`register_endpoint`.
ENDPOINT_SECRET = "whsec_test-endpoint-secret"


def register_endpoint(
    conn: psycopg.Connection[Any],
    url: str,
    *,
    tenant: str = "tenant-1",
    secret: str = ENDPOINT_SECRET,
    enabled: bool = True,
    key: str = LOCAL_ENDPOINT_SECRETS_KEY,
) -> uuid.UUID:
    """A webhook endpoint row, written directly (no URL vetting: delivery must refuse
    what registration would have), its secret sealed with ``key``."""
    endpoint_id = uuid.uuid4()
    sealed = SecretBox(key).seal(secret, tenant=tenant, endpoint_id=endpoint_id)
    conn.execute(
        "INSERT INTO webhook_endpoints (tenant_id, id, url, enabled, secret_sealed)"
        " VALUES (%s, %s, %s, %s, %s)",
        (tenant, endpoint_id, url, enabled, sealed),
    )
    return endpoint_id


def insert_notifications(
    conn: psycopg.Connection[Any],
    rows: Iterable[dict[str, Any]],
) -> list[uuid.UUID]:
    """Insert notifications (``channel``, ``recipient`` — or, for a webhook, ``url`` (an
    endpoint is registered per tenant and URL) or ``endpoint_id`` — and optional
    ``template``, ``params``, ``delay_s`` before due) and wake the workers; returns their
    ids."""
    ids = []
    endpoints: dict[tuple[str, str], uuid.UUID] = {}
    with conn.transaction():
        for row in rows:
            notification_id = row.get("notification_id") or uuid.uuid4()
            tenant = row.get("tenant_id", "tenant-1")
            endpoint_id = row.get("endpoint_id")
            if "url" in row:
                key = (tenant, row["url"])
                if key not in endpoints:
                    endpoints[key] = register_endpoint(conn, row["url"], tenant=tenant)
                endpoint_id = endpoints[key]
            conn.execute(
                """
                INSERT INTO notifications (notification_id, event_id, tenant_id, channel,
                    recipient, endpoint_id, template, params, requested_at, next_attempt_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(),
                        now() + make_interval(secs => %s))
                """,
                (
                    notification_id,
                    uuid.uuid4(),
                    tenant,
                    row["channel"],
                    row.get("recipient") or str(endpoint_id),
                    endpoint_id,
                    row.get("template", "welcome"),
                    Jsonb(row.get("params", {})),
                    float(row.get("delay_s", 0.0)),
                ),
            )
            ids.append(notification_id)
        conn.execute("SELECT pg_notify('sidestream_notifications', '')")
    return ids


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    """A webhook notification to an endpoint registered for ``url``."""
    return {"channel": "WEBHOOK", "url": url, **extra}


def legacy_webhook(url: str, **extra: Any) -> dict[str, Any]:
    """A row as written before endpoints existed: the raw URL in ``recipient``."""
    return {"channel": "WEBHOOK", "recipient": url, **extra}


def destinations(conn: psycopg.Connection[Any], ids: Iterable[uuid.UUID]) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT destination FROM notifications WHERE notification_id = ANY(%s)",
        (list(ids),),
    ).fetchall()
    return {str(r[0]) for r in rows}


def email(address: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "EMAIL", "recipient": address, **extra}


def status_of(conn: psycopg.Connection[Any], notification_id: uuid.UUID) -> str | None:
    row = conn.execute(
        "SELECT status FROM notifications WHERE notification_id = %s", (notification_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def row_of(conn: psycopg.Connection[Any], notification_id: uuid.UUID) -> dict[str, Any]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM notifications WHERE notification_id = %s", (notification_id,))
        row = cur.fetchone()
    assert row is not None
    return row


def attempts_of(conn: psycopg.Connection[Any], notification_id: uuid.UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            "SELECT * FROM notification_attempts WHERE notification_id = %s ORDER BY attempt",
            (notification_id,),
        )
        return cur.fetchall()


def statuses(conn: psycopg.Connection[Any], ids: Iterable[uuid.UUID]) -> Counter[str]:
    rows = conn.execute(
        "SELECT status FROM notifications WHERE notification_id = ANY(%s)", (list(ids),)
    ).fetchall()
    return Counter(str(r[0]) for r in rows)


def all_in(conn: psycopg.Connection[Any], ids: list[uuid.UUID], status: str) -> bool:
    return statuses(conn, ids).get(status, 0) == len(ids)
