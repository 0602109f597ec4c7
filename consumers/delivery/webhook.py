"""Webhook channel: an HTTP POST of a signed JSON body to the ``recipient`` URL.

Request::

    POST <recipient>
    Content-Type: application/json
    Idempotency-Key: <notification_id>          (the same on every attempt)
    Sidestream-Signature: t=<unix>,v1=<hex>     (see consumers.delivery.signing)
    Sidestream-Notification-Id: <notification_id>
    Sidestream-Attempt: <n>

    {"event_id": …, "notification_id": …, "params": {…}, "requested_at": "<ISO 8601>",
     "template": …, "tenant_id": …}

The body is the same on every attempt (keys sorted), so a receiver may deduplicate on the
``Idempotency-Key`` header or on the body. Redirects are not followed. The whole request
is bounded by ``timeout_s`` (connect, send, and the response's first kilobyte).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx

from consumers.delivery.errors import RecipientError
from consumers.delivery.policy import AttemptResult, Outcome, Stopwatch, parse_retry_after
from consumers.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from consumers.delivery.store import Notification

_REPLY_BYTES = 1024
USER_AGENT = "sidestream-delivery/1"


def webhook_body(notification: Notification) -> bytes:
    """The JSON body POSTed for ``notification`` (stable across attempts)."""
    document = {
        "notification_id": str(notification.notification_id),
        "event_id": str(notification.event_id),
        "tenant_id": notification.tenant_id,
        "template": notification.template,
        "params": dict(notification.params),
        "requested_at": notification.requested_at.isoformat(),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def new_http_client(
    *, timeout_s: float, connect_timeout_s: float, max_connections: int
) -> httpx.AsyncClient:
    """An HTTP client for webhooks: no redirects, no proxy settings from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


class WebhookChannel:
    """Delivers ``WEBHOOK`` notifications through an injected :class:`httpx.AsyncClient`."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        signing_secret: str,
        timeout_s: float,
        require_https: bool = False,
    ) -> None:
        if not signing_secret:
            raise ValueError("signing_secret must not be empty")
        self._client = client
        self._secret = signing_secret
        self._timeout_s = timeout_s
        self._require_https = require_https

    @property
    def name(self) -> str:
        return "WEBHOOK"

    @property
    def deadline_s(self) -> float:
        return self._timeout_s

    def _check_url(self, url: str) -> str:
        parts = urlsplit(url)
        allowed = ("https",) if self._require_https else ("https", "http")
        if parts.scheme not in allowed:
            raise RecipientError(self.name, url, f"scheme must be one of {', '.join(allowed)}")
        if not parts.hostname:
            raise RecipientError(self.name, url, "no host")
        return url

    async def send(self, notification: Notification) -> AttemptResult:
        result = Stopwatch().result
        try:
            url = self._check_url(notification.recipient)
        except RecipientError as exc:
            return result(Outcome.PERMANENT, error_class="bad_recipient", error=str(exc))
        body = webhook_body(notification)
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: notification.idempotency_key,
            SIGNATURE_HEADER: sign(self._secret, body),
            "Sidestream-Notification-Id": notification.idempotency_key,
            "Sidestream-Attempt": str(notification.attempt),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    reply = await _first_bytes(resp)
        except (TimeoutError, httpx.TimeoutException) as exc:
            return result(
                Outcome.TRANSIENT,
                error_class="timeout",
                error=f"no response within {self._timeout_s:g} s ({type(exc).__name__})",
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return result(Outcome.PERMANENT, error_class="bad_recipient", error=str(exc))
        except httpx.ConnectError as exc:
            return result(Outcome.TRANSIENT, error_class="connect", error=str(exc) or "connect")
        except httpx.TransportError as exc:
            # Read/write errors, a peer that closed mid-response, a protocol violation.
            return result(
                Outcome.TRANSIENT, error_class="transport", error=f"{type(exc).__name__}: {exc}"
            )
        code = resp.status_code
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if 200 <= code < 300:
            return result(Outcome.SENT, status_code=code, reply=reply)
        if code in (408, 429) or code >= 500:
            error_class = "http_5xx" if code >= 500 else f"http_{code}"
            return result(
                Outcome.TRANSIENT,
                status_code=code,
                reply=reply,
                error_class=error_class,
                retry_after_s=retry_after if code in (429, 503) else None,
            )
        error_class = "http_3xx" if 300 <= code < 400 else "http_4xx"
        return result(Outcome.PERMANENT, status_code=code, reply=reply, error_class=error_class)


async def _first_bytes(response: httpx.Response) -> str:
    """Up to 1 KiB of the body, decoded leniently: enough to say why it failed."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _REPLY_BYTES:
            break
    return b"".join(chunks)[:_REPLY_BYTES].decode("utf-8", "replace")
