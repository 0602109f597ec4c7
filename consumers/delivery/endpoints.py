"""Webhook endpoints: where a tenant's webhooks go, and the secret each is signed with.

An endpoint (the Stripe/Svix model) is a registered URL with a description, the event
types (templates) it accepts, an ``enabled`` flag and its own signing secret. The API
registers them (``/v1/tenants/{t}/webhook-endpoints``) through :class:`EndpointStore`;
notifications name an endpoint id, and the notify worker reads the endpoint's current
URL and secret when it claims the notification (``consumers.delivery.store``).

How the signing secrets are protected: a secret (``whsec_`` + 32 random bytes,
base64url) is returned once, at creation or rotation, and never again by any read. The
worker needs the secret itself to compute HMACs, so it cannot be stored as a one-way
hash; it is stored **encrypted** (:class:`SecretBox`: AES-256-GCM, a fresh 96-bit nonce
per seal, key = SHA-256 of ``SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY``), with the
tenant and endpoint id as associated data so a sealed secret copied onto another row
does not open. A database dump, backup, replica or SQL read alone therefore reveals no
secret; the key lives only in the API's and the notify worker's settings (a secret
setting, never logged; its local default is refused by the worker in production).
Rotation keeps the previous secret valid for a grace period (default 24 h) and signs
with both meanwhile (two ``v1=`` entries), so receivers can switch without losing
deliveries.

Unqualified table names: the connection's ``search_path`` selects the schema.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from consumers.delivery.errors import DeliveryError
from runtime.times import utc_text

__all__ = [
    "LOCAL_ENDPOINT_SECRETS_KEY",
    "EndpointRow",
    "EndpointStore",
    "SecretBox",
    "SecretBoxError",
    "new_signing_secret",
]

#: The default key that encrypts endpoint secrets: fine locally, refused in production.
LOCAL_ENDPOINT_SECRETS_KEY = "sidestream-local-endpoint-secrets-key"
_SEAL_VERSION = b"\x01"
_NONCE_BYTES = 12
SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)

_COLUMNS = (
    "tenant_id, id, url, description, event_types, enabled, version, created_at, updated_at,"
    " previous_secret_expires_at"
)
_CHANGEABLE = ("url", "description", "event_types", "enabled")


class SecretBoxError(DeliveryError):
    """A sealed secret does not open: another key, another row, or damaged."""


def new_signing_secret() -> str:
    """A fresh endpoint signing secret (256 random bits)."""
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class SecretBox:
    """Seals and opens endpoint signing secrets (AES-256-GCM, see the module docstring)."""

    def __init__(self, key: str) -> None:
        if len(key) < 16:
            raise ValueError("the endpoint secrets key must be at least 16 characters")
        self._aead = AESGCM(hashlib.sha256(key.encode()).digest())

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"

    @staticmethod
    def _context(tenant: str, endpoint_id: UUID) -> bytes:
        return f"sidestream-webhook-secret/{tenant}/{endpoint_id}".encode()

    def seal(self, secret: str, *, tenant: str, endpoint_id: UUID) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), self._context(tenant, endpoint_id))
        return _SEAL_VERSION + nonce + sealed

    def open(self, sealed: bytes, *, tenant: str, endpoint_id: UUID) -> str:
        """The secret sealed for this tenant and endpoint.

        Raises:
            SecretBoxError: wrong key (``SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY`` differs
                between API and worker?), wrong row, or damaged bytes.
        """
        if sealed[:1] != _SEAL_VERSION:
            raise SecretBoxError("unknown sealed-secret format")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, body, self._context(tenant, endpoint_id))
        except InvalidTag:
            raise SecretBoxError(
                f"the signing secret of endpoint {endpoint_id} does not open with this key "
                "(is SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY the same for API and worker?)"
            ) from None
        return plain.decode()


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One row of ``webhook_endpoints`` (no secret: secrets are never read back)."""

    tenant_id: str
    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime
    previous_secret_expires_at: datetime | None

    def document(self) -> dict[str, Any]:
        """The API representation, as plain JSON."""
        return {
            "id": str(self.id),
            "url": self.url,
            "description": self.description,
            "event_types": list(self.event_types),
            "enabled": self.enabled,
            "version": self.version,
            "created_at": utc_text(self.created_at),
            "updated_at": utc_text(self.updated_at),
        }

    def accepts(self, event_type: str) -> bool:
        """Does this endpoint take ``event_type``? (No event types: it takes all.)"""
        return not self.event_types or event_type in self.event_types


class EndpointStore:
    """Reads and writes ``webhook_endpoints``; every method takes the caller's
    connection (and so its transaction). URLs must be vetted by the caller
    (:class:`consumers.delivery.targets.TargetGuard`)."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    async def create(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        endpoint_id: UUID,
        *,
        url: str,
        description: str,
        event_types: Sequence[str],
        enabled: bool = True,
    ) -> tuple[EndpointRow, str]:
        """Insert an endpoint with a new secret; returns the row and the secret (shown
        to the caller once, stored only sealed)."""
        secret = new_signing_secret()
        sealed = self._box.seal(secret, tenant=tenant, endpoint_id=endpoint_id)
        cursor = await conn.execute(
            "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types,"
            f" enabled, secret_sealed) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (tenant, endpoint_id, url, description, list(event_types), enabled, sealed),
        )
        row = await cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING returns the row
        return EndpointRow(*row), secret

    async def get(
        self, conn: psycopg.AsyncConnection[Any], tenant: str, endpoint_id: UUID
    ) -> EndpointRow | None:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s AND id = %s",
            (tenant, endpoint_id),
        )
        row = await cursor.fetchone()
        return None if row is None else EndpointRow(*row)

    async def page(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        *,
        after: UUID | None,
        limit: int,
    ) -> list[EndpointRow]:
        """Up to ``limit`` endpoints with an id above ``after``, in id order."""
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE tenant_id = %s"
            " AND (%s::uuid IS NULL OR id > %s::uuid) ORDER BY id LIMIT %s",
            (tenant, after, after, limit),
        )
        return [EndpointRow(*row) for row in await cursor.fetchall()]

    async def update(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        endpoint_id: UUID,
        changes: Mapping[str, Any],
    ) -> EndpointRow | None:
        """Apply ``changes`` (url, description, event_types, enabled); ``None`` if there
        is no such endpoint."""
        unknown = set(changes) - set(_CHANGEABLE)
        if unknown or not changes:
            raise ValueError(f"cannot change {sorted(unknown) or 'nothing'}")
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in changes
        )
        query = sql.SQL(
            "UPDATE webhook_endpoints SET {}, version = version + 1, updated_at = now()"
            " WHERE tenant_id = %(tenant)s AND id = %(id)s RETURNING {}"
        ).format(assignments, sql.SQL(_COLUMNS))
        values = {k: list(v) if k == "event_types" else v for k, v in changes.items()}
        cursor = await conn.execute(query, {**values, "tenant": tenant, "id": endpoint_id})
        row = await cursor.fetchone()
        return None if row is None else EndpointRow(*row)

    async def rotate_secret(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        endpoint_id: UUID,
        *,
        previous_valid_s: float,
    ) -> tuple[EndpointRow, str] | None:
        """A new secret; the current one stays valid (signed with too) for
        ``previous_valid_s``. ``None`` if there is no such endpoint."""
        secret = new_signing_secret()
        sealed = self._box.seal(secret, tenant=tenant, endpoint_id=endpoint_id)
        cursor = await conn.execute(
            "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed,"
            " previous_secret_expires_at = now() + make_interval(secs => %s),"
            " secret_sealed = %s, version = version + 1, updated_at = now()"
            f" WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (previous_valid_s, sealed, tenant, endpoint_id),
        )
        row = await cursor.fetchone()
        return None if row is None else (EndpointRow(*row), secret)

    async def delete(
        self, conn: psycopg.AsyncConnection[Any], tenant: str, endpoint_id: UUID
    ) -> EndpointRow | None:
        """Delete the endpoint (its secret with it); pending notifications for it then
        fail as ``endpoint_gone``. ``None`` if there was none."""
        cursor = await conn.execute(
            f"DELETE FROM webhook_endpoints WHERE tenant_id = %s AND id = %s RETURNING {_COLUMNS}",
            (tenant, endpoint_id),
        )
        row = await cursor.fetchone()
        return None if row is None else EndpointRow(*row)
