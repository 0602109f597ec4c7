"""The one FastAPI dependency of the resource routes: :class:`RequestContext` — the
open resources, the tenant, the caller, with the rate limit already charged.

One dependency instead of several small ones on purpose: FastAPI's dependency solving
costs tens of microseconds per node, more than a cached read itself. It is a coroutine
for the same reason (plain ``def`` dependencies run in a worker thread).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from schemas import trace_headers
from services.api.context import REQUEST_ID_EVENT_HEADER
from services.api.errors import RateLimitedError
from services.api.middleware import RATE_LIMIT_STATE
from services.api.resources import ApiResources

__all__ = ["TENANT_PATTERN", "Caller", "Context", "RequestContext", "ResourcesDep"]

#: Tenants become parts of Redis keys and Kafka keys: a conservative alphabet.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_ACTOR_ID = re.compile(r"^\S{1,200}$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, and the context their events carry."""

    request_id: str
    actor_id: str
    ip: str | None
    traceparent: str | None

    def event_headers(self) -> list[tuple[str, bytes | str]]:
        """Kafka headers of every event this request causes (``traceparent`` is passed
        separately, as the publisher and the outbox put it first)."""
        return [(REQUEST_ID_EVENT_HEADER, self.request_id)]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a resource route gets: resources, tenant, caller (already rate-limited)."""

    resources: ApiResources
    tenant: str
    caller: Caller


def _caller(request: Request) -> Caller:
    headers = request.headers
    actor = headers.get("x-actor-id")
    traceparent = headers.get("traceparent")
    if traceparent is not None:
        try:
            trace_headers(traceparent)
        except ValueError:
            traceparent = None  # a malformed trace context is dropped, not an error
    return Caller(
        request_id=str(request.state.request_id),
        actor_id=actor if actor and _ACTOR_ID.fullmatch(actor) else "anonymous",
        ip=request.client.host if request.client else None,
        traceparent=traceparent,
    )


async def _charge(request: Request, tenant: str, resources: ApiResources) -> None:
    """Charge one request to ``tenant``/client (``X-Client-ID``, else the peer address);
    raise 429 when the bucket is empty. The decision is left in the request state, where
    the middleware turns it into ``RateLimit-*`` headers on every response."""
    limiter = resources.limiter
    if limiter is None:
        return
    client = request.headers.get("x-client-id")
    if not client or not _CLIENT_ID.fullmatch(client):
        client = request.client.host if request.client else "unknown"
    decision = await limiter.hit(f"{tenant}/{client}")
    setattr(request.state, RATE_LIMIT_STATE, decision)  # read back by the middleware
    if not decision.allowed:
        raise RateLimitedError(decision)


async def _context(
    request: Request,
    tenant: Annotated[
        str, Path(pattern=TENANT_PATTERN, description="Tenant id: 1-64 of A-Z a-z 0-9 _ . -")
    ],
) -> RequestContext:
    resources: ApiResources = request.app.state.resources
    await _charge(request, tenant, resources)
    return RequestContext(resources, tenant, _caller(request))


async def _resources(request: Request) -> ApiResources:
    resources: ApiResources = request.app.state.resources
    return resources


Context = Annotated[RequestContext, Depends(_context)]
ResourcesDep = Annotated[ApiResources, Depends(_resources)]
