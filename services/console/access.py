"""Who may use the console, and what they may do.

Access is an injected :class:`KeyVerifier`: an API key in, a :class:`Principal` (a name
and the key's scopes) out. The console never stores keys; it asks the verifier once, at
sign-in, and keeps a short server-side :class:`Session` (an opaque cookie) after that.

Roles follow the API's scopes:

- ``admin`` scope → **operator**: may act (redrive, replay, retry deliveries);
- ``read`` scope (without ``admin``) → **read-only**: may look at every page;
- anything else is refused at sign-in.

Every action is a POST carrying the session's CSRF token (synchronizer token: the token
lives in the server-side session and is rendered into each form; a cross-site form
cannot read it). The session cookie is ``HttpOnly`` and ``SameSite=Strict`` as well.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

__all__ = [
    "KeyVerifier",
    "Principal",
    "Role",
    "Session",
    "SessionStore",
    "StaticKeyVerifier",
]


class Role(StrEnum):
    """What a principal may do in the console."""

    OPERATOR = "operator"
    READ_ONLY = "read-only"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key belongs to, and the scopes it carries.

    ``name`` is how audit events and the ledger name it (the API's ``apikey:<key_id>``),
    never a secret; ``tenant`` is the tenant the key belongs to (None: not tenant-bound).
    """

    name: str
    scopes: frozenset[str]
    tenant: str | None = None

    @property
    def role(self) -> Role | None:
        """The console role the scopes give (None: no access)."""
        if "admin" in self.scopes:
            return Role.OPERATOR
        if "read" in self.scopes:
            return Role.READ_ONLY
        return None


class KeyVerifier(Protocol):
    """Turns an API key into the principal it belongs to (None: unknown, revoked, expired).

    The API's key store implements this (an adapter over its authenticator); the console
    depends on nothing else of it. Implementations compare secrets in constant time and
    raise ``ConnectionError`` when their store is unreachable. A coroutine, as the API's
    authenticator is one (on its async pool).
    """

    async def verify(self, key: str) -> Principal | None: ...


@dataclass(frozen=True, slots=True)
class StaticKeyVerifier:
    """A fixed set of keys held in memory: for ``sidestream console`` on the local stack
    (one random operator key, printed in the sign-in URL) and for tests.

    Not a key store: keys are never persisted, and the process forgets them on exit.
    """

    keys: tuple[tuple[str, Principal], ...]

    @classmethod
    def of(cls, keys: dict[str, Principal]) -> StaticKeyVerifier:
        return cls(tuple(keys.items()))

    async def verify(self, key: str) -> Principal | None:
        found = None
        for known, principal in self.keys:
            # Compare against every key, so timing says nothing about which was close.
            if hmac.compare_digest(known.encode(), key.encode()):
                found = principal
        return found


@dataclass(slots=True)
class Session:
    """A signed-in browser: the principal, its CSRF token, when it lapses."""

    token: str
    principal: Principal
    csrf: str
    expires_at: float
    flashes: list[str] = field(default_factory=list)

    @property
    def role(self) -> Role:
        role = self.principal.role
        assert role is not None  # sessions are only made for principals with a role
        return role

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR

    def csrf_ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(self.csrf, candidate)


class SessionStore:
    """Sessions in memory, bounded in number and in age (the oldest is dropped first).

    A console is one process; a restart signs everybody out, which is the safe default.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 8 * 3600,
        max_sessions: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_sessions < 1:
            raise ValueError("ttl_s must be positive and max_sessions at least 1")
        self._ttl_s = ttl_s
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, principal: Principal) -> Session:
        if principal.role is None:
            raise ValueError(f"{principal.name} has no console role (needs read or admin scope)")
        session = Session(
            token=secrets.token_urlsafe(32),
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._ttl_s,
        )
        with self._lock:
            self._sessions[session.token] = session
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires_at <= self._clock():
                del self._sessions[token]
                return None
            return session

    def close(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)
