"""Webhook signatures: ``Sidestream-Signature: t=<unix seconds>,v1=<hex>``.

``v1`` is HMAC-SHA256 with the shared secret over ``"<t>.<body>"`` (the exact body bytes).
Receivers recompute it, compare in constant time, and reject a ``t`` older than a few
minutes, which bounds replays of a captured request. Several ``v1`` entries may appear
while a secret is being rotated; one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

from consumers.delivery.errors import SignatureError

SIGNATURE_HEADER = "Sidestream-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Sidestream-Signature`` header value for ``body`` (timestamp: now)."""
    return sign_all([secret], body, timestamp=timestamp)


def sign_all(secrets: Sequence[str], body: bytes, *, timestamp: int | None = None) -> str:
    """The header with one ``v1`` per secret (current first): during a rotation the
    receiver's old and new secret both verify."""
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    t = int(time.time()) if timestamp is None else timestamp
    return ",".join([f"t={t}", *(f"v1={signature(s, body, t)}" for s in secrets)])


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> int:
    """Check a ``Sidestream-Signature`` header; returns its timestamp.

    Raises:
        SignatureError: malformed header, timestamp outside ``tolerance_s``, or no
            ``v1`` that matches.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed signature element {part!r}")
        if key == "t":
            if not value.isdigit():
                raise SignatureError(f"malformed timestamp {value!r}")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("signature header needs t= and v1=")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the {tolerance_s:.0f} s tolerance")
    expected = signature(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches the body")
    return timestamp
