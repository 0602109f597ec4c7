"""Tenants and API keys in Postgres (``services/migrations/0002_tenants_api_keys.sql``).

A key is ``ssk_<key_id>_<secret>``: ``key_id`` is 16 hex digits, public (it names the key
in logs, ``sidestream keys list`` and audit events); ``secret`` is 32 random bytes
(base64url). Only ``HMAC-SHA256(hash_secret, secret)`` is stored.

Why a fast keyed hash and not bcrypt/argon2: those slow hashes exist to protect
low-entropy, human-chosen passwords from offline guessing. A 256-bit random secret
cannot be guessed whatever the hash costs, so a slow hash would only add ~50-100 ms of CPU
to every request. Keying the hash with a server secret (kept out of the database) means a
stolen copy of ``api_keys`` does not even let anyone test a guess. The comparison is
constant-time (:func:`hmac.compare_digest`), and the lookup is by the public ``key_id``,
so timing reveals nothing about the secret.

The synchronous functions serve the CLI (``sidestream tenants|keys``); the API reads keys
with :func:`fetch_key` on its async pool.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg

from services.errors import ServicesError

__all__ = [
    "KEY_PREFIX",
    "ApiKeyRecord",
    "NewApiKey",
    "Scope",
    "TenancyError",
    "TenantRecord",
    "check_key_id",
    "check_tenant_id",
    "create_key",
    "create_tenant",
    "fetch_key",
    "hash_secret",
    "list_keys",
    "list_tenants",
    "parse_key",
    "revoke_key",
]

KEY_PREFIX = "ssk_"
_KEY = re.compile(r"^ssk_(?P<id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_COLUMNS = "key_id, tenant_id, scopes, secret_hash, description, created_at, expires_at, revoked_at"


class Scope(StrEnum):
    """What a credential may do in its tenant.

    - ``read``: GET the tenant's resources;
    - ``write``: create, change and delete them (includes ``read``);
    - ``notify``: request notifications;
    - ``admin``: everything above, plus administrative resources (e.g. webhook endpoints,
      the operator console) and ``act-as``;
    - ``act-as``: name the end user an action is for in ``X-Actor-ID`` (a service acting
      for its users); the audit event then records both.
    """

    READ = "read"
    WRITE = "write"
    NOTIFY = "notify"
    ADMIN = "admin"
    ACT_AS = "act-as"


_IMPLIED: dict[Scope, frozenset[Scope]] = {
    Scope.READ: frozenset({Scope.READ}),
    Scope.WRITE: frozenset({Scope.READ, Scope.WRITE}),
    Scope.NOTIFY: frozenset({Scope.NOTIFY}),
    Scope.ADMIN: frozenset(Scope),
    Scope.ACT_AS: frozenset({Scope.ACT_AS}),
}


def effective_scopes(granted: Iterable[str]) -> frozenset[Scope]:
    """The scopes ``granted`` amount to (``write`` includes ``read``, ``admin`` all);
    unknown names are ignored."""
    result: set[Scope] = set()
    for name in granted:
        try:
            result |= _IMPLIED[Scope(name)]
        except ValueError:
            continue
    return frozenset(result)


class TenancyError(ServicesError, ValueError):
    """A tenant or key operation was refused (unknown tenant, bad value); one line."""


@dataclass(frozen=True, slots=True)
class TenantRecord:
    tenant_id: str
    name: str
    created_at: datetime
    active_keys: int


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored key (never its secret)."""

    key_id: str
    tenant_id: str
    scopes: tuple[str, ...]
    secret_hash: bytes
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ApiKeyRecord:
        return cls(
            key_id=row[0],
            tenant_id=row[1],
            scopes=tuple(row[2]),
            secret_hash=bytes(row[3]),
            description=row[4],
            created_at=row[5],
            expires_at=row[6],
            revoked_at=row[7],
        )

    @property
    def label(self) -> str:
        """How logs and audit events name the key: ``apikey:<key_id>``."""
        return f"apikey:{self.key_id}"

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``revoked`` or ``expired``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just made: ``token`` is the full credential, shown once and stored nowhere."""

    record: ApiKeyRecord
    token: str = ""

    def __repr__(self) -> str:  # the token must not end up in a log by accident
        return f"NewApiKey(key_id={self.record.key_id!r}, tenant={self.record.tenant_id!r})"


def hash_secret(hash_key: bytes, secret: str) -> bytes:
    """``HMAC-SHA256(hash_key, secret)`` (see the module docstring for why)."""
    return hmac.new(hash_key, secret.encode(), hashlib.sha256).digest()


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed ``ssk_...`` token, else ``None``."""
    match = _KEY.fullmatch(token)
    return None if match is None else (match["id"], match["secret"])


def _scopes(scopes: Iterable[str]) -> list[str]:
    chosen = []
    for name in scopes:
        try:
            chosen.append(Scope(name).value)
        except ValueError:
            raise TenancyError(
                f"unknown scope {name!r}; choose from {', '.join(s.value for s in Scope)}"
            ) from None
    if not chosen:
        raise TenancyError("give at least one scope")
    return sorted(set(chosen))


def check_tenant_id(tenant_id: str) -> str:
    """``tenant_id`` if it is a valid tenant id, else :class:`TenancyError` (a
    ``ValueError``) saying what is expected."""
    if not _TENANT.fullmatch(tenant_id):
        raise TenancyError(
            f"tenant id {tenant_id!r} must be 1-64 of A-Z a-z 0-9 _ . - (letter or digit first)"
        )
    return tenant_id


def check_key_id(key: str) -> str:
    """The key id (16 hex digits) of ``key``: an id, a whole key or its ``ssk_<id>``
    prefix; else :class:`TenancyError` (a ``ValueError``) saying what is expected."""
    key_id = key.removeprefix(KEY_PREFIX)[:16]
    if not _KEY_ID.fullmatch(key_id):
        raise TenancyError(
            f"{key!r} is not a key id: expected 16 hex digits, the key, or ssk_<id> "
            "(as `sidestream keys list` shows)"
        )
    return key_id


def create_tenant(conn: psycopg.Connection[Any], tenant_id: str, name: str = "") -> TenantRecord:
    """Create a tenant (its id is the ``{tenant}`` of API paths)."""
    check_tenant_id(tenant_id)
    if len(name) > 200 or "\x00" in name:
        raise TenancyError("tenant name: at most 200 characters, no NUL")
    try:
        row = conn.execute(
            "INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) RETURNING created_at",
            (tenant_id, name),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise TenancyError(f"tenant {tenant_id!r} already exists") from None
    assert row is not None
    return TenantRecord(tenant_id, name, row[0], 0)


def list_tenants(conn: psycopg.Connection[Any]) -> list[TenantRecord]:
    """Every tenant with its number of active keys."""
    rows = conn.execute(
        "SELECT t.tenant_id, t.name, t.created_at, count(k.key_id) FILTER ("
        " WHERE k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now()))"
        " FROM tenants t LEFT JOIN api_keys k USING (tenant_id)"
        " GROUP BY t.tenant_id ORDER BY t.tenant_id"
    ).fetchall()
    return [TenantRecord(r[0], r[1], r[2], int(r[3])) for r in rows]


def create_key(
    conn: psycopg.Connection[Any],
    tenant_id: str,
    *,
    scopes: Iterable[str],
    hash_key: bytes,
    expires_at: datetime | None = None,
    description: str = "",
) -> NewApiKey:
    """Make a key for ``tenant_id`` (which must exist); the token is returned once."""
    if expires_at is not None and expires_at <= datetime.now(UTC):
        raise TenancyError("the expiry is in the past")
    if len(description) > 200 or "\x00" in description:
        raise TenancyError("description: at most 200 characters, no NUL")
    chosen = _scopes(scopes)
    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,)).fetchone() is None:
        raise TenancyError(f"no tenant {tenant_id!r}; create it with `sidestream tenants create`")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 32 bytes → 43 base64url characters
    row = conn.execute(
        "INSERT INTO api_keys (key_id, tenant_id, scopes, secret_hash, description, expires_at)"
        f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
        (key_id, tenant_id, chosen, hash_secret(hash_key, secret), description, expires_at),
    ).fetchone()
    assert row is not None
    return NewApiKey(ApiKeyRecord.from_row(row), f"{KEY_PREFIX}{key_id}_{secret}")


def list_keys(conn: psycopg.Connection[Any], tenant_id: str | None = None) -> list[ApiKeyRecord]:
    """Keys (of one tenant, or all), oldest first."""
    if tenant_id is None:
        cursor = conn.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
    else:
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM api_keys WHERE tenant_id = %s ORDER BY created_at, key_id",
            (tenant_id,),
        )
    return [ApiKeyRecord.from_row(row) for row in cursor.fetchall()]


def revoke_key(conn: psycopg.Connection[Any], key_id: str, *, tenant_id: str | None = None) -> bool:
    """Revoke a key (idempotent); ``False`` if there is no such key (in that tenant)."""
    key_id = key_id.removeprefix(KEY_PREFIX)[:16]
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())"
        " WHERE key_id = %s AND (%s::text IS NULL OR tenant_id = %s::text) RETURNING key_id",
        (key_id, tenant_id, tenant_id),
    ).fetchone()
    return row is not None


async def fetch_key(conn: psycopg.AsyncConnection[Any], key_id: str) -> ApiKeyRecord | None:
    """The stored key ``key_id`` (revoked and expired ones included), or ``None``."""
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = %s", (key_id,))
    row = await cursor.fetchone()
    return None if row is None else ApiKeyRecord.from_row(row)
