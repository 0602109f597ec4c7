"""Webhook channel: an HTTP POST of a signed JSON body to a registered endpoint's URL.

Request::

    POST <endpoint url>
    Content-Type: application/json
    Idempotency-Key: <notification_id>          (the same on every attempt)
    Sidestream-Signature: t=<unix>,v1=<hex>     (see consumers.delivery.signing; a second
                                                 v1 while a rotated secret is in grace)
    Sidestream-Notification-Id: <notification_id>
    Sidestream-Attempt: <n>

    {"event_id": …, "notification_id": …, "params": {…}, "requested_at": "<ISO 8601>",
     "template": …, "tenant_id": …}

The body is the same on every attempt (keys sorted), so a receiver may deduplicate on the
``Idempotency-Key`` header or on the body. The URL and the signing secret are the
endpoint's as they are at claim time (``consumers.delivery.endpoints``); a deleted or
disabled endpoint fails the notification. Rows written before endpoints existed carry
the URL in ``recipient`` and are signed with the deployment-wide secret.

Every connection goes through the SSRF guard (:mod:`consumers.delivery.targets`): the
host is resolved and vetted at connect time and the socket pinned to the vetted address.
Redirects are not followed. The reply body is read (at most 16 KiB, to keep the
connection reusable) and discarded: only the status code is recorded. Network failures
of any kind are one class, ``network``, with one message, so ``last_error`` cannot tell
an open port from a closed one. The whole request is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging

import httpx

from consumers.delivery.endpoints import SecretBox, SecretBoxError
from consumers.delivery.policy import AttemptResult, Outcome, Stopwatch, parse_retry_after
from consumers.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign_all
from consumers.delivery.store import Notification
from consumers.delivery.targets import (
    PinnedTransport,
    TargetGuard,
    TargetRefusedError,
    redact_url,
)

logger = logging.getLogger(__name__)

_DISCARD_BYTES = 16 * 1024
#: What ``last_error`` says for any failure below HTTP (refused, reset, timed out, TLS).
NETWORK_ERROR = "no HTTP response (connection failed, timed out or was closed)"
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
    *,
    guard: TargetGuard,
    timeout_s: float,
    connect_timeout_s: float,
    max_connections: int,
) -> httpx.AsyncClient:
    """An HTTP client for webhooks: every connection vetted and pinned by ``guard``, no
    redirects, no proxy settings from the environment."""
    return httpx.AsyncClient(
        transport=PinnedTransport(guard, max_connections=max_connections),
        timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


class WebhookChannel:
    """Delivers ``WEBHOOK`` notifications through an injected :class:`httpx.AsyncClient`
    (built by :func:`new_http_client`, so the SSRF guard applies to every connection).

    ``guard`` checks each URL before the request (scheme, spelling); ``secret_box``
    opens endpoint secrets; ``signing_secret`` signs rows written before endpoints.
    """

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        signing_secret: str,
        secret_box: SecretBox,
        guard: TargetGuard,
        timeout_s: float,
    ) -> None:
        if not signing_secret:
            raise ValueError("signing_secret must not be empty")
        self._client = client
        self._secret = signing_secret
        self._box = secret_box
        self._guard = guard
        self._timeout_s = timeout_s

    @property
    def name(self) -> str:
        return "WEBHOOK"

    @property
    def deadline_s(self) -> float:
        return self._timeout_s

    def _url_and_secrets(self, notification: Notification) -> tuple[str, list[str]]:
        """Raises ``LookupError`` (endpoint gone or disabled) or ``SecretBoxError``."""
        endpoint = notification.endpoint
        if endpoint is None:
            return notification.recipient, [self._secret]
        if not endpoint.found or endpoint.url is None:
            raise LookupError("endpoint_gone", "the webhook endpoint was deleted")
        if not endpoint.enabled:
            raise LookupError("endpoint_disabled", "the webhook endpoint is disabled")
        secrets = [
            self._box.open(sealed, tenant=notification.tenant_id, endpoint_id=endpoint.endpoint_id)
            for sealed in endpoint.sealed_secrets
        ]
        return endpoint.url, secrets

    async def send(self, notification: Notification) -> AttemptResult:
        result = Stopwatch().result
        try:
            url, secrets = self._url_and_secrets(notification)
            self._guard.parse(url)
        except LookupError as exc:
            error_class, message = exc.args
            return result(Outcome.PERMANENT, error_class=error_class, error=message)
        except SecretBoxError as exc:
            # A key mismatch between API and worker: an operator must fix the settings,
            # after which `sidestream notifications retry` sends these again.
            return result(Outcome.PERMANENT, error_class="secret", error=str(exc))
        except TargetRefusedError as exc:
            return result(Outcome.PERMANENT, error_class="refused_target", error=exc.reason)
        body = webhook_body(notification)
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: notification.idempotency_key,
            SIGNATURE_HEADER: sign_all(secrets, body),
            "Sidestream-Notification-Id": notification.idempotency_key,
            "Sidestream-Attempt": str(notification.attempt),
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as resp:
                    await _discard(resp)
        except TargetRefusedError as exc:
            # At connect time: what the host resolves to now is not allowed (rebinding).
            return result(Outcome.PERMANENT, error_class="refused_target", error=exc.reason)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            return result(
                Outcome.PERMANENT, error_class="bad_recipient", error="the URL cannot be called"
            )
        except (TimeoutError, httpx.TransportError) as exc:
            logger.debug(
                "notification %s to %s: %s",
                notification.notification_id,
                redact_url(url),
                type(exc).__name__,
            )
            return result(Outcome.TRANSIENT, error_class="network", error=NETWORK_ERROR)
        code = resp.status_code
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if 200 <= code < 300:
            return result(Outcome.SENT, status_code=code)
        if code in (408, 429) or code >= 500:
            error_class = "http_5xx" if code >= 500 else f"http_{code}"
            return result(
                Outcome.TRANSIENT,
                status_code=code,
                error_class=error_class,
                retry_after_s=retry_after if code in (429, 503) else None,
            )
        error_class = "http_3xx" if 300 <= code < 400 else "http_4xx"
        return result(Outcome.PERMANENT, status_code=code, error_class=error_class)


async def _discard(response: httpx.Response) -> None:
    """Read and drop up to 16 KiB of the reply: nothing of it is kept or logged (a reply
    may carry anything), and a short reply read to the end keeps the connection
    reusable; a longer one closes it."""
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size >= _DISCARD_BYTES:
            break
