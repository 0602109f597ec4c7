"""``POST /v1/tenants/{tenant}/notifications``: accept a notification for delivery.

The request is published as ``NotificationRequested`` straight to Kafka (no database
write); the notifications sink and delivery workers take it from there. The response is
202 as soon as the event is queued locally — nothing waits on the broker. A full queue
(the broker is slow or away) is a 503 with ``Retry-After``: the caller retries, nothing
is silently dropped.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import uuid6
from fastapi import Header, status
from pydantic.json_schema import SkipJsonSchema

from schemas import NotificationRequested
from services.api.auth import Scope, require_scope, tenant_router
from services.api.deps import RequestContext
from services.api.errors import error_responses
from services.api.link_hosts import check_links
from services.api.models import NotificationAccepted, NotificationCreate, WebhookNotification
from services.api.webhook_endpoints import endpoint_for_notification

__all__ = ["router"]

# Notification ids derived from an Idempotency-Key live in their own UUID namespace.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("7b0f3e8e-52f4-4c55-9a0b-2a3c0f1e9d11")

router = tenant_router("/notifications", tags=["notifications"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationAccepted,
    responses=error_responses(400, 413),
    summary="Request a notification (queued; delivered asynchronously; scope: notify)",
)
async def request_notification(
    body: NotificationCreate,
    ctx: Annotated[RequestContext, require_scope(Scope.NOTIFY)],
    idempotency_key: Annotated[
        str | SkipJsonSchema[None],
        Header(
            min_length=1,
            max_length=200,
            description="Retries with the same key get the same id and are delivered once.",
        ),
    ] = None,
) -> NotificationAccepted:
    resources, tenant, caller = ctx.resources, ctx.tenant, ctx.caller
    # 422 for an unusable endpoint, or an email linking outside the tenant's link hosts.
    if isinstance(body, WebhookNotification):
        await endpoint_for_notification(ctx, body.endpoint_id, body.template)
        recipient, endpoint_id = str(body.endpoint_id), str(body.endpoint_id)
    else:
        await check_links(ctx, body.params)
        recipient, endpoint_id = body.recipient, None
    if idempotency_key:
        notification_id = uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{tenant}/{idempotency_key}")
    else:
        notification_id = uuid6.uuid7()
    event = NotificationRequested.new(
        tenant_id=tenant,
        producer=resources.config.producer,
        notification_id=str(notification_id),
        channel=body.channel,
        recipient=recipient,
        endpoint_id=endpoint_id,
        template=body.template,
        params=body.params,
        dedupe_key=body.dedupe_key or idempotency_key,
    )
    # Backpressure (queue full) propagates: the error handler answers 503 + Retry-After;
    # an event larger than the broker takes (PublishError) becomes a 413.
    await resources.publisher.publish(
        event,
        topic=resources.config.topic(NotificationRequested),
        traceparent=caller.traceparent,
        headers=caller.event_headers(),
    )
    return NotificationAccepted(id=notification_id)
