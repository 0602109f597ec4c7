"""What a tenant route gets: :class:`RequestContext` — the open resources, the tenant,
the caller (authenticated principal and the actor its events record), with the rate
limit already charged.

Routes ask for it with :func:`services.api.auth.require_scope`, which authenticates
first; :func:`request_context` is what that dependency returns. The dependencies are
coroutines on purpose (plain ``def`` dependencies run in a worker thread).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from schemas import trace_headers
from services.api.auth import Principal, Scope
from services.api.context import REQUEST_ID_EVENT_HEADER
from services.api.errors import RateLimitedError
from services.api.middleware import RATE_LIMIT_STATE
from services.api.resources import ApiResources

__all__ = ["Caller", "RequestContext", "ResourcesDep", "request_context"]

_ACTOR_ID = re.compile(r"^[!-~]{1,200}$")  # printable ASCII, no spaces


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, and the context their events carry.

    Attributes:
        actor_id: the audit actor: the principal, or the end user it named in
            ``X-Actor-ID`` when it has the ``act-as`` scope.
        principal_id: the authenticated principal (``apikey:<key_id>``), always.
    """

    request_id: str
    actor_id: str
    ip: str | None
    traceparent: str | None
    principal_id: str = "anonymous"

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


def _caller(request: Request, principal: Principal) -> Caller:
    headers = request.headers
    traceparent = headers.get("traceparent")
    if traceparent is not None:
        try:
            trace_headers(traceparent)
        except ValueError:
            traceparent = None  # a malformed trace context is dropped, not an error
    actor = principal.id
    # Only a principal trusted to act for its users may name one; from anyone else the
    # header is ignored (the audit trail records who really called).
    named = headers.get("x-actor-id")
    if named and principal.allows(Scope.ACT_AS) and _ACTOR_ID.fullmatch(named):
        actor = named
    return Caller(
        request_id=str(request.state.request_id),
        actor_id=actor,
        ip=request.client.host if request.client else None,
        traceparent=traceparent,
        principal_id=principal.id,
    )


async def _charge(request: Request, principal: Principal, scope: Scope) -> None:
    """Charge one request to the principal's bucket for ``scope`` (the anonymous
    principal of ``SIDESTREAM_API_AUTH=none``: per tenant and peer address); raise 429
    when it is empty. ``X-Client-ID`` plays no part: a caller chooses it. The decision
    is left in the request state, where the middleware turns it into ``RateLimit-*``
    headers on every response."""
    resources: ApiResources = request.app.state.resources
    limiter = resources.limiter
    limit = resources.rate_limits.get(scope) if resources.rate_limits else None
    if limiter is None or limit is None:
        return
    subject = principal.id
    if subject == "anonymous":
        peer = request.client.host if request.client else "unknown"
        subject = f"anonymous:{principal.tenant}:{peer}"
    decision = await limiter.hit(f"{subject}/{scope.value}", limit=limit)
    setattr(request.state, RATE_LIMIT_STATE, decision)  # read back by the middleware
    if not decision.allowed:
        raise RateLimitedError(decision)


async def request_context(request: Request, principal: Principal, scope: Scope) -> RequestContext:
    """The context of a request already authenticated as ``principal`` and allowed
    ``scope`` (called by :func:`services.api.auth.require_scope`)."""
    resources: ApiResources = request.app.state.resources
    await _charge(request, principal, scope)
    return RequestContext(resources, principal.tenant, _caller(request, principal))


async def _resources(request: Request) -> ApiResources:
    resources: ApiResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[ApiResources, Depends(_resources)]
