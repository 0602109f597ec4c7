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

Credentials: JWTs of an identity provider when ``SIDESTREAM_API_JWT_JWKS`` is set
(:class:`JwtAuthenticator`), and API keys (``ssk_<key_id>_<secret>``, see
:mod:`services.api.keys`), checked
against Postgres through a small in-process cache — a key's record is kept for
``SIDESTREAM_API_KEY_CACHE_TTL_S`` (5 s), so a revocation reaches every API process within
that time; expiry is checked on every request against the clock. The secret itself is
verified (constant time) on every request, cached record or not.

With ``SIDESTREAM_API_AUTH=none`` (refused by the production profile) every request is an
anonymous principal of the path's tenant with every scope, as before authentication
existed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Annotated, Any

import jwt
from cachetools import TTLCache
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from pydantic import StringConstraints

from services.api.errors import (
    ForbiddenError,
    ServiceUnavailableError,
    UnauthorizedError,
    error_responses,
)
from services.api.keys import (
    KEY_PREFIX,
    ApiKeyRecord,
    Scope,
    effective_scopes,
    fetch_key,
    hash_secret,
)
from services.api.keys import parse_key as _parse_key
from services.api.models import NoFinalNewline

__all__ = [
    "TENANT_PATTERN",
    "ApiKeyAuthenticator",
    "BearerAuthenticator",
    "JwtAuthenticator",
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
    bearerFormat="ssk_<key id>_<secret>, or a JWT",
    description="An API key made with `sidestream keys create --tenant T --scope S`, sent as "
    "`Authorization: Bearer ssk_...`; or, where configured, a JWT of the identity provider "
    "(tenant and scopes in its claims). A credential belongs to one tenant and has scopes: "
    "read, write (includes read), notify, admin (everything), act-as (may name the end "
    "user in `X-Actor-ID`).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is authenticated as.

    Attributes:
        tenant: the only tenant it may act in.
        id: how audit events, logs and rate limits name it (``apikey:<key_id>``,
            ``jwt:<sub>``, or ``anonymous`` without authentication); never a secret.
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

    def clear_cache(self) -> None:
        """Forget every cached key record (the next request of each key looks it up)."""
        if self._cache is not None:
            self._cache.clear()

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
            # Debug: guessing traffic would flood the log (the access log has the 401).
            logger.debug("rejected API key apikey:%s: unknown or wrong secret", key_id)
            raise UnauthorizedError("invalid API key", invalid=True)
        status = record.status(datetime.now(UTC))
        if status != "active":
            logger.info("rejected API key %s: %s", record.label, status)
            raise UnauthorizedError(f"the API key is {status}", invalid=True)
        return Principal(record.tenant_id, record.label, effective_scopes(record.scopes))


_PRINCIPAL_TEXT = re.compile(r"^[!-~]{1,200}$")  # printable ASCII: it becomes an actor id


class JwtAuthenticator:
    """Checks JWT bearer tokens from an identity provider: signature against a JWKS (a
    file, read once, or an https:// URL, whose keys PyJWT caches for 5 minutes and
    refetches for an unknown ``kid``), ``exp``/``nbf`` (30 s leeway), ``iss`` and ``aud``
    required and checked. The tenant comes from ``tenant_claim``, the scopes from
    ``scope_claim`` (space-separated, or a list); the principal is ``jwt:<sub>``.

    Raises (at construction):
        ValueError: the JWKS file cannot be read or holds no usable key.
    """

    def __init__(
        self,
        *,
        jwks: str,
        issuer: str,
        audience: str,
        algorithms: list[str],
        tenant_claim: str = "tenant",
        scope_claim: str = "scope",
        leeway_s: float = 30.0,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._algorithms = algorithms
        self._tenant_claim = tenant_claim
        self._scope_claim = scope_claim
        self._leeway = leeway_s
        self._client: jwt.PyJWKClient | None = None
        self._keyset: jwt.PyJWKSet | None = None
        if jwks.startswith(("https://", "http://")):
            self._client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=300, timeout=5)
        else:
            try:
                self._keyset = jwt.PyJWKSet.from_json(FilePath(jwks).read_text())
            except (OSError, jwt.PyJWTError) as exc:
                raise ValueError(f"cannot use the JWKS {jwks}: {exc}") from None

    async def _key(self, kid: str | None) -> Any:
        if self._keyset is not None:
            keys = self._keyset.keys
            for key in keys:
                if (kid is None and len(keys) == 1) or key.key_id == kid:
                    return key.key
            raise jwt.InvalidTokenError(f"no key {kid!r} in the JWKS")
        assert self._client is not None
        # PyJWKClient fetches with urllib (blocking): off the event loop.
        if kid is None:
            raise jwt.InvalidTokenError("the token names no key (kid)")
        signing = await asyncio.to_thread(self._client.get_signing_key, kid)
        return signing.key

    async def authenticate(self, token: str) -> Principal:
        """The principal of a JWT.

        Raises:
            UnauthorizedError: bad signature, expired, wrong issuer/audience, no tenant.
            ServiceUnavailableError: the JWKS URL cannot be reached.
        """
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key(header.get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            logger.warning("JWKS unreachable: %s", exc)
            raise ServiceUnavailableError(
                "the identity provider's keys cannot be fetched", retry_after=5
            ) from None
        except jwt.PyJWTError as exc:
            logger.debug("rejected JWT: %s", exc)
            raise UnauthorizedError(f"invalid token: {exc}", invalid=True) from None
        tenant, subject = claims.get(self._tenant_claim), claims.get("sub")
        if not isinstance(tenant, str) or not re.fullmatch(TENANT_PATTERN, tenant):
            raise UnauthorizedError(f"the token has no valid {self._tenant_claim!r}", invalid=True)
        if not isinstance(subject, str) or not _PRINCIPAL_TEXT.fullmatch(subject):
            raise UnauthorizedError("the token's sub is not printable ASCII", invalid=True)
        granted = claims.get(self._scope_claim, "")
        names = granted.split() if isinstance(granted, str) else granted
        scopes = effective_scopes(n for n in names if isinstance(n, str))
        return Principal(tenant, f"jwt:{subject}", scopes)


class BearerAuthenticator:
    """Dispatches a bearer token: ``ssk_…`` to the API keys, anything else to the JWT
    authenticator when one is configured."""

    def __init__(self, keys: ApiKeyAuthenticator, jwts: JwtAuthenticator | None = None):
        self.keys = keys
        self.jwts = jwts

    async def authenticate(self, token: str) -> Principal:
        if token.startswith(KEY_PREFIX) or self.jwts is None:
            return await self.keys.authenticate(token)
        return await self.jwts.authenticate(token)


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
    authenticator: BearerAuthenticator | None = resources.authenticator
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
