"""``/v1/tenants/{tenant}/webhook-endpoints``: a tenant's registered webhook endpoints.

The Stripe/Svix model: a tenant registers a URL (with a description and the event types
— templates — it accepts) and gets back a signing secret, shown once; notifications
then name the endpoint's id, never a URL. ``POST …/{id}/rotate-secret`` issues a new
secret while the old one keeps verifying for a grace period. Secrets are stored sealed
(``consumers.delivery.endpoints``) and never returned by a read.

Every URL passes the SSRF guard (:class:`consumers.delivery.TargetGuard`) here, at
registration, and again at every connection of the notify worker: a refused target is a
422 whose detail says why (the address class, never the address). Every write commits
with its ``AuditEvent`` in one transaction (the outbox); the audit details carry the
URL without its query string, and never the secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

import psycopg
import uuid6
from fastapi import Query, Response, status
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from consumers.delivery import (
    DeliveryConfig,
    EndpointRow,
    EndpointStore,
    TargetGuard,
    TargetRefusedError,
    redact_url,
)
from schemas import AuditEvent, AuditOutcome
from services.api.auth import Scope, require_scope, tenant_router
from services.api.deps import RequestContext
from services.api.errors import ApiError, NotFoundError, error_responses

__all__ = [
    "ENTITY_TYPE",
    "UnprocessableError",
    "endpoint_for_notification",
    "router",
]

ENTITY_TYPE = "webhook_endpoint"
_GRACE_DEFAULT_S = 86_400

# Reading needs `read`; registering, changing and rotating needs `admin` (a signing secret
# and a delivery target are a tenant's configuration, not ordinary data).
ReadContext = Annotated[RequestContext, require_scope(Scope.READ)]
WriteContext = Annotated[RequestContext, require_scope(Scope.ADMIN)]

router = tenant_router("/webhook-endpoints", tags=["webhook endpoints"])


class UnprocessableError(ApiError):
    """The request is well-formed but names something unusable (a refused webhook target,
    an unknown endpoint, a link to a host not on the tenant's allowlist)."""

    status = 422
    title = "Unprocessable Content"


# --- bodies -------------------------------------------------------------------------------
def _storable(value: str) -> str:
    """Refuse what Postgres cannot store in text (NUL, lone surrogates): a 422, not a 500."""
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate?)") from None
    return value


Url = Annotated[
    str,
    # http(s) and printable ASCII in the schema; whether the target is allowed (its
    # addresses, HTTPS in production) is the target guard's, answered with a 422.
    StringConstraints(min_length=8, max_length=2000, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$"),
    AfterValidator(_storable),
]
EventType = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Description = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_storable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookEndpointCreate(_Strict):
    """A new endpoint (``POST``). ``event_types`` lists the templates it accepts; empty:
    all."""

    url: Url = Field(
        description="https:// URL (http:// too outside production), printable ASCII "
        "(international names in punycode); a private or odd target is a 422."
    )
    description: Description = ""
    event_types: list[EventType] = Field(default_factory=list, max_length=100)
    enabled: bool = True


class WebhookEndpointPatch(_Strict):
    """Fields to change (``PATCH``); at least one."""

    url: Url | None = None
    description: Description | None = None
    event_types: list[EventType] | None = Field(default=None, max_length=100)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.changes():
            raise ValueError("give at least one of url, description, event_types, enabled")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class WebhookEndpoint(BaseModel):
    """A registered endpoint (its secret is never shown again after creation)."""

    id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    version: int
    created_at: datetime
    updated_at: datetime


class WebhookEndpointCreated(WebhookEndpoint):
    """The new endpoint with its signing secret — the only time the secret is shown."""

    secret: str = Field(
        description="HMAC-SHA256 key of Sidestream-Signature for this endpoint; store it now."
    )


class WebhookEndpointPage(BaseModel):
    """Endpoints in id (creation) order."""

    items: list[WebhookEndpoint]
    next_after: UUID | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class SecretRotation(_Strict):
    """How long the current secret keeps signing (alongside the new one)."""

    previous_secret_valid_s: int = Field(default=_GRACE_DEFAULT_S, ge=0, le=7 * 86_400)


class RotatedSecret(BaseModel):
    id: UUID
    secret: str = Field(description="The new signing secret; shown only now.")
    previous_secret_expires_at: datetime | None


# --- helpers ------------------------------------------------------------------------------
def _delivery(ctx: RequestContext) -> tuple[DeliveryConfig, TargetGuard, EndpointStore]:
    settings = ctx.resources.settings
    config = DeliveryConfig.from_settings(settings)
    guard = config.target_guard(production=settings.profile == "production")
    return config, guard, EndpointStore(config.secret_box())


async def _vetted(guard: TargetGuard, url: str) -> str:
    try:
        await guard.vet(url)
    except TargetRefusedError as exc:
        raise UnprocessableError(f"url: {exc.reason}") from None
    except ConnectionError:
        raise UnprocessableError("url: the host name does not resolve") from None
    return url


def _json(row: EndpointRow, status_code: int = 200, **headers: str) -> Response:
    body = WebhookEndpoint.model_validate(row.document()).model_dump_json()
    return Response(body, status_code=status_code, media_type="application/json", headers=headers)


async def _audit(
    ctx: RequestContext,
    conn: psycopg.AsyncConnection[Any],
    row: EndpointRow,
    action: str,
    details: dict[str, str],
) -> None:
    resources, caller = ctx.resources, ctx.caller
    event = AuditEvent.new(
        tenant_id=ctx.tenant,
        producer=resources.config.producer,
        actor_id=caller.actor_id,
        action=f"{ENTITY_TYPE}.{action}",
        resource_type=ENTITY_TYPE,
        resource_id=str(row.id),
        outcome=AuditOutcome.SUCCESS,
        ip=caller.ip,
        details={**details, "request_id": caller.request_id, "version": str(row.version)},
    )
    await resources.outbox.add_many(
        conn,
        [(event, resources.config.topic(AuditEvent), caller.event_headers())],
        traceparent=caller.traceparent,
    )


# --- routes -------------------------------------------------------------------------------
@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookEndpointCreated,
    responses=error_responses(400, 413),
    summary="Register a webhook endpoint (its signing secret is in this response only)",
)
async def create_endpoint(body: WebhookEndpointCreate, ctx: WriteContext) -> Response:
    _config, guard, store = _delivery(ctx)
    url = await _vetted(guard, body.url)
    endpoint_id = uuid6.uuid7()
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        row, secret = await store.create(
            conn,
            ctx.tenant,
            endpoint_id,
            url=url,
            description=body.description,
            event_types=body.event_types,
            enabled=body.enabled,
        )
        await _audit(ctx, conn, row, "create", {"url": redact_url(url)})
    created = WebhookEndpointCreated(**row.document(), secret=secret)
    return Response(
        created.model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={
            "Location": f"/v1/tenants/{ctx.tenant}/webhook-endpoints/{row.id}",
            # The secret must not sit in a shared cache.
            "Cache-Control": "no-store",
        },
    )


@router.get("", response_model=WebhookEndpointPage, summary="List webhook endpoints")
async def list_endpoints(
    ctx: ReadContext,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 50,
    after: Annotated[UUID | None, Query(description="`next_after` of the previous page.")] = None,
) -> Response:
    _config, _guard, store = _delivery(ctx)
    async with ctx.resources.read_pool.connection() as conn:
        rows = await store.page(conn, ctx.tenant, after=after, limit=limit + 1)
    page = WebhookEndpointPage(
        items=[WebhookEndpoint.model_validate(r.document()) for r in rows[:limit]],
        next_after=rows[limit - 1].id if len(rows) > limit else None,
    )
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/{endpoint_id}",
    response_model=WebhookEndpoint,
    responses=error_responses(404),
    summary="Read a webhook endpoint",
)
async def get_endpoint(endpoint_id: UUID, ctx: ReadContext) -> Response:
    _config, _guard, store = _delivery(ctx)
    async with ctx.resources.read_pool.connection() as conn:
        row = await store.get(conn, ctx.tenant, endpoint_id)
    if row is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id}")
    return _json(row)


@router.patch(
    "/{endpoint_id}",
    response_model=WebhookEndpoint,
    responses=error_responses(400, 404, 413),
    summary="Change a webhook endpoint (a new URL is checked like a new endpoint)",
)
async def patch_endpoint(
    endpoint_id: UUID, body: WebhookEndpointPatch, ctx: WriteContext
) -> Response:
    _config, guard, store = _delivery(ctx)
    changes = body.changes()
    if "url" in changes:
        await _vetted(guard, changes["url"])
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        row = await store.update(conn, ctx.tenant, endpoint_id, changes)
        if row is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id}")
        details = {"fields": ",".join(sorted(changes))}
        if "url" in changes:
            details["url"] = redact_url(row.url)
        await _audit(ctx, conn, row, "update", details)
    return _json(row)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a webhook endpoint (notifications still pending for it fail)",
)
async def delete_endpoint(endpoint_id: UUID, ctx: WriteContext) -> Response:
    _config, _guard, store = _delivery(ctx)
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        row = await store.delete(conn, ctx.tenant, endpoint_id)
        if row is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id}")
        await _audit(ctx, conn, row, "delete", {})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=RotatedSecret,
    responses=error_responses(400, 404, 413),
    summary="Issue a new signing secret; the old one keeps signing for a grace period",
)
async def rotate_secret(
    endpoint_id: UUID, ctx: WriteContext, body: SecretRotation | None = None
) -> Response:
    _config, _guard, store = _delivery(ctx)
    grace = (body or SecretRotation()).previous_secret_valid_s
    async with ctx.resources.pool.connection() as conn, conn.transaction():
        rotated = await store.rotate_secret(conn, ctx.tenant, endpoint_id, previous_valid_s=grace)
        if rotated is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id}")
        row, secret = rotated
        await _audit(ctx, conn, row, "rotate_secret", {"previous_valid_s": str(grace)})
    answer = RotatedSecret(
        id=row.id, secret=secret, previous_secret_expires_at=row.previous_secret_expires_at
    )
    return Response(
        answer.model_dump_json(),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def endpoint_for_notification(
    ctx: RequestContext, endpoint_id: UUID, template: str
) -> EndpointRow:
    """The tenant's endpoint a webhook notification names, if it can take ``template``.

    Raises:
        UnprocessableError: no such endpoint in this tenant, disabled, or it does not
            accept the template.
    """
    _config, _guard, store = _delivery(ctx)
    # The primary, not the replica: an endpoint registered a moment ago must be found.
    async with ctx.resources.pool.connection() as conn:
        row = await store.get(conn, ctx.tenant, endpoint_id)
    if row is None:
        raise UnprocessableError(
            f"endpoint_id: no webhook endpoint {endpoint_id} in this tenant "
            f"(register one with POST /v1/tenants/{ctx.tenant}/webhook-endpoints)"
        )
    if not row.enabled:
        raise UnprocessableError(f"endpoint_id: webhook endpoint {endpoint_id} is disabled")
    if not row.accepts(template):
        raise UnprocessableError(
            f"template: webhook endpoint {endpoint_id} does not accept {template!r} "
            f"(its event types: {', '.join(row.event_types)})"
        )
    return row
