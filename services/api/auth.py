"""Authentication and tenancy of the reference API.

Every route under ``/v1/tenants/{tenant}/`` is mounted with :func:`tenant_router`, whose
router-level dependency :func:`authenticate` turns ``Authorization: Bearer <token>`` into
a :class:`Principal` (401 + ``WWW-Authenticate`` when the credential is missing, unknown,
expired or revoked; 403 when it belongs to another tenant). Each route then states the
scope it needs with :func:`require_scope` (403 ``insufficient_scope`` without it), which
also charges the principal's rate limit for that scope and hands the route its
:class:`~services.api.deps.RequestContext`. ``create_app`` refuses to build an app with a
tenant route that lacks either (:func:`check_tenant_routes`), so a router added later
cannot be mounted open by mistake.

Credentials: API keys (``ssk_<key_id>_<secret>``, see :mod:`services.api.keys`), checked
against Postgres through a small in-process cache — a key's record is kept for
``SIDESTREAM_API_KEY_CACHE_TTL_S`` (5 s), so a revocation reaches every API process within
that time; expiry is checked on every request against the clock. The secret itself is
verified (constant time) on every request, cached record or not.

With ``SIDESTREAM_API_AUTH=none`` (refused by the production profile) every request is an
anonymous principal of the path's tenant with every scope, as before authentication
existed.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from cachetools import TTLCache
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import StringConstraints

from services.api.errors import ForbiddenError, UnauthorizedError, error_responses
from services.api.keys import ApiKeyRecord, Scope, effective_scopes, fetch_key, hash_secret
from services.api.keys import parse_key as _parse_key
from services.api.models import NoFinalNewline

__all__ = [
    "TENANT_PATTERN",
    "ApiKeyAuthenticator",
    "Principal",
    "Scope",
    "authenticate",
    "check_tenant_routes",
    "require_scope",
    "tenant_router",
]

logger = logging.getLogger(__name__)

#: Tenants become parts of Redis keys and Kafka keys: a conservative alphabet.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    bearerFormat="ssk_<key id>_<secret>",
    description="An API key made with `sidestream keys create --tenant T --scope S`, sent as "
    "`Authorization: Bearer ssk_...`. A key belongs to one tenant and has scopes: read, "
    "write (includes read), notify, admin (everything), act-as (may name the end user in "
    "`X-Actor-ID`).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is authenticated as.

    Attributes:
        tenant: the only tenant it may act in.
        id: how audit events, logs and rate limits name it (``apikey:<key_id>``, or
            ``anonymous`` without authentication); never a secret.
        scopes: what it may do (implied scopes included: ``write`` has ``read``).
    """

    tenant: str
    id: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


Pool = AsyncConnectionPool[AsyncConnection[Any]]


class ApiKeyAuthenticator:
    """Checks ``ssk_...`` API keys against ``api_keys``, with a short in-process cache.

    Args:
        pool: where ``api_keys`` is (the primary: a replica could lag a revocation).
        hash_key: ``SIDESTREAM_API_KEY_HASH_SECRET``.
        cache_ttl_s: how long a key's record (or its absence) is cached; the bound on how
            long a revoked key keeps working in this process. 0 disables the cache.
        max_entries: cache size (unknown key ids are cached too, so guessing ids cannot
            turn every request into a query).
    """

    def __init__(
        self,
        *,
        pool: Pool,
        hash_key: bytes,
        cache_ttl_s: float = 5.0,
        max_entries: int = 10_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        if not hash_key:
            raise ValueError("hash_key must not be empty")
        self._pool = pool
        self._hash_key = hash_key
        self._cache: TTLCache[str, ApiKeyRecord | None] | None = (
            TTLCache(maxsize=max_entries, ttl=cache_ttl_s, timer=timer) if cache_ttl_s > 0 else None
        )

    async def _record(self, key_id: str) -> ApiKeyRecord | None:
        if self._cache is not None and key_id in self._cache:
            return self._cache[key_id]
        async with self._pool.connection() as conn:
            record = await fetch_key(conn, key_id)
        if self._cache is not None:
            self._cache[key_id] = record
        return record

    async def authenticate(self, token: str) -> Principal:
        """The principal of ``token`` (the bearer credential).

        Raises:
            UnauthorizedError: malformed, unknown, wrong secret, revoked or expired.
        """
        parsed = _parse_key(token)
        if parsed is None:
            raise UnauthorizedError("the bearer token is not an API key", invalid=True)
        key_id, secret = parsed
        record = await self._record(key_id)
        # The digest is computed even for an unknown id, so timing does not tell them apart.
        digest = hash_secret(self._hash_key, secret)
        if record is None or not hmac.compare_digest(record.secret_hash, digest):
            logger.info("rejected API key apikey:%s: unknown or wrong secret", key_id)
            raise UnauthorizedError("invalid API key", invalid=True)
        status = record.status(datetime.now(UTC))
        if status != "active":
            logger.info("rejected API key %s: %s", record.label, status)
            raise UnauthorizedError(f"the API key is {status}", invalid=True)
        return Principal(record.tenant_id, record.label, effective_scopes(record.scopes))


_ANONYMOUS_SCOPES = frozenset(Scope)


async def authenticate(
    request: Request,
    tenant: Annotated[
        Annotated[str, StringConstraints(pattern=TENANT_PATTERN), NoFinalNewline],
        Path(description="Tenant id: 1-64 of A-Z a-z 0-9 _ . -"),
    ],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The router-level dependency of every tenant route: the request's
    :class:`Principal`, which must belong to the path's ``tenant``.

    Raises:
        UnauthorizedError: no bearer credential, or not a valid one (401).
        ForbiddenError: the credential is another tenant's (403).
    """
    resources = request.app.state.resources
    authenticator: ApiKeyAuthenticator | None = resources.authenticator
    if authenticator is None:  # SIDESTREAM_API_AUTH=none (local only)
        principal = Principal(tenant, "anonymous", _ANONYMOUS_SCOPES)
    else:
        if credentials is None:
            raise UnauthorizedError("send `Authorization: Bearer <API key>`")
        principal = await authenticator.authenticate(credentials.credentials)
        if principal.tenant != tenant:
            raise ForbiddenError(f"{principal.id} may not act in tenant {tenant}")
    request.state.principal = principal
    return principal


ScopeDependency = Callable[..., Coroutine[Any, Any, Any]]


def require_scope(scope: Scope) -> Any:
    """A dependency that checks the authenticated principal has ``scope`` (403
    ``insufficient_scope`` otherwise), charges its rate limit for ``scope``, and returns
    the route's :class:`~services.api.deps.RequestContext`.

    Use it as ``ctx: Annotated[RequestContext, require_scope(Scope.WRITE)]`` on a route
    of a :func:`tenant_router` (or ``dependencies=[require_scope(Scope.ADMIN)]`` when the
    route needs no context).
    """
    from services.api.deps import request_context  # deps builds on this module

    async def scoped(
        request: Request, principal: Annotated[Principal, Depends(authenticate)]
    ) -> Any:
        if not principal.allows(scope):
            raise ForbiddenError(
                f"{principal.id} lacks the {scope.value} scope", insufficient_scope=scope.value
            )
        return await request_context(request, principal, scope)

    scoped.__sidestream_scope__ = scope  # type: ignore[attr-defined]  # read by check_tenant_routes
    return Depends(scoped)


def tenant_router(path: str, *, tags: list[str]) -> APIRouter:
    """An ``APIRouter`` for ``/v1/tenants/{tenant}<path>`` that authenticates every route
    (:func:`authenticate`) and documents 401/403. Give each route a
    :func:`require_scope`."""
    return APIRouter(
        prefix=f"/v1/tenants/{{tenant}}{path}",
        tags=list(tags),
        dependencies=[Depends(authenticate)],
        responses=error_responses(401, 403, 422, 429, 503),
    )


def _calls(dependant: Dependant) -> list[Any]:
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(_calls(sub))
    return found


def check_tenant_routes(app: FastAPI) -> None:
    """Refuse an app with a ``/v1/tenants/...`` route that is not authenticated or states
    no scope (a router mounted without :func:`tenant_router`/:func:`require_scope`).

    Raises:
        RuntimeError: naming the route.
    """
    for route in iter_route_contexts(app.routes):
        dependant = getattr(route, "dependant", None)
        if not (route.path or "").startswith("/v1/tenants/") or dependant is None:
            continue
        calls = _calls(dependant)
        if authenticate not in calls:
            raise RuntimeError(
                f"{route.path} is not authenticated: mount it with services.api.auth.tenant_router"
            )
        if not any(hasattr(call, "__sidestream_scope__") for call in calls):
            raise RuntimeError(f"{route.path} states no scope: add require_scope(...)")
