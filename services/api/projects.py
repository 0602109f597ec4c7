"""``/v1/tenants/{tenant}/projects``: CRUD on projects.

Writes: the row and its ``AuditEvent`` + ``EntityChanged`` commit in one transaction
(the outbox); nothing waits on Kafka. Reads: through the versioned cache (item key per
project; list pages under the tenant's generation counter), loading from the read pool.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Annotated, Any
from uuid import UUID

import psycopg
import uuid6
from fastapi import Header, Query, Response, status
from pydantic import StringConstraints
from pydantic.json_schema import SkipJsonSchema

from producers import ProducerError
from schemas import AnalyticsEvent, AuditEvent, AuditOutcome, ChangeKind, EntityChanged
from services.api.auth import Scope, require_scope, tenant_router
from services.api.deps import Caller, RequestContext
from services.api.errors import (
    ConflictError,
    NotFoundError,
    PreconditionFailedError,
    error_responses,
)
from services.api.models import (
    NoFinalNewline,
    Project,
    ProjectCreate,
    ProjectPage,
    ProjectPatch,
    ProjectReplace,
)
from services.api.resources import ApiResources
from services.api.store import ProjectRow, VersionMismatchError
from services.cache import NotFound, Versioned
from services.entities import collection_of, item_key

__all__ = ["ENTITY_TYPE", "router"]

logger = logging.getLogger(__name__)

ENTITY_TYPE = "project"
_JSON = "application/json"

router = tenant_router("/projects", tags=["projects"])

ReadContext = Annotated[RequestContext, require_scope(Scope.READ)]
WriteContext = Annotated[RequestContext, require_scope(Scope.WRITE)]

#: ``*`` or one strong entity tag of ASCII digits (a version fits a bigint: 19 digits);
#: an empty field is no condition, like an absent one.
IF_MATCH_PATTERN = r'^(|\*|"[0-9]{1,19}")$'
_INT64_MAX = 2**63 - 1

# SkipJsonSchema: absent is not `null` (a fuzzer would send the text "null").
IfMatch = Annotated[
    Annotated[str, StringConstraints(pattern=IF_MATCH_PATTERN), NoFinalNewline]
    | SkipJsonSchema[None],
    Header(
        description="Optimistic concurrency: the version (ETag) the change applies to, "
        'e.g. `"3"`, or `*`; 412 if the project is at another version. Anything else '
        "(lists, weak tags, non-digits) is a 422.",
    ),
]


def _expected_version(if_match: str | None) -> int | None:
    """The version ``If-Match`` names (``None`` for absent or ``*``); the header was
    already checked against :data:`IF_MATCH_PATTERN`. A number beyond a bigint names no
    version any project can have: -1, which matches nothing (412)."""
    if not if_match or if_match == "*":
        return None
    version = int(if_match.strip('"'))
    return version if version <= _INT64_MAX else -1


def _encode_cursor(project_id: UUID) -> str:
    return base64.urlsafe_b64encode(project_id.bytes).rstrip(b"=").decode()


#: What ``_encode_cursor`` makes: 16 bytes in unpadded base64url. The last character
#: carries 2 spare bits; the decoder ignores them, so every string of this shape decodes.
#: Empty: the first page, like no cursor.
CURSOR_PATTERN = r"^([A-Za-z0-9_-]{21}[AQgw])?$"


def _decode_cursor(cursor: str) -> UUID:
    # The query parameter's pattern admits only what decodes to 16 bytes.
    return UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))


def _project_response(row: ProjectRow, status_code: int = 200, **headers: str) -> Response:
    return Response(
        row.body(),
        status_code=status_code,
        media_type=_JSON,
        headers={"ETag": f'"{row.version}"', **headers},
    )


async def _commit_write(
    resources: ApiResources,
    conn: psycopg.AsyncConnection[Any],
    tenant: str,
    row: ProjectRow,
    caller: Caller,
    *,
    action: str,
    change: ChangeKind,
    details: dict[str, str],
) -> None:
    """Add the write's audit and change events to the outbox, in the caller's
    transaction."""
    config = resources.config
    audit = AuditEvent.new(
        tenant_id=tenant,
        producer=config.producer,
        actor_id=caller.actor_id,
        action=action,
        resource_type=ENTITY_TYPE,
        resource_id=str(row.id),
        outcome=AuditOutcome.SUCCESS,
        ip=caller.ip,
        # The authenticated principal, always; actor_id differs from it only when an
        # act-as principal named the end user.
        details={
            **details,
            "request_id": caller.request_id,
            "version": str(row.version),
            "principal": caller.principal_id,
        },
    )
    changed = EntityChanged.new(
        tenant_id=tenant,
        producer=config.producer,
        entity_type=ENTITY_TYPE,
        entity_id=str(row.id),
        version=row.version,
        change_kind=change,
    )
    headers = caller.event_headers()
    await resources.outbox.add_many(
        conn,
        [
            (audit, config.topic(AuditEvent), headers),
            (changed, config.topic(EntityChanged), headers),
        ],
        traceparent=caller.traceparent,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=Project,
    responses=error_responses(400, 409, 413),
    summary="Create a project (scope: write)",
)
async def create_project(body: ProjectCreate, ctx: WriteContext) -> Response:
    resources, tenant, caller = ctx.resources, ctx.tenant, ctx.caller
    project_id = uuid6.uuid7()
    fields = body.model_dump(mode="json")
    try:
        async with resources.pool.connection() as conn, conn.transaction():
            row = await resources.store.create(conn, tenant, project_id, fields)
            await _commit_write(
                resources,
                conn,
                tenant,
                row,
                caller,
                action="project.create",
                change=ChangeKind.CREATED,
                details={"name": row.name},
            )
    except psycopg.errors.UniqueViolation:
        raise ConflictError(f"a project named {body.name!r} already exists") from None
    await resources.invalidate_after_write(tenant, ENTITY_TYPE, str(row.id), row.version)
    return _project_response(
        row, status.HTTP_201_CREATED, Location=f"/v1/tenants/{tenant}/projects/{row.id}"
    )


@router.get(
    "",
    response_model=ProjectPage,
    summary="List projects (cursor pagination, in creation order; scope: read)",
)
async def list_projects(
    ctx: ReadContext,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 50,
    cursor: Annotated[
        Annotated[str, StringConstraints(pattern=CURSOR_PATTERN), NoFinalNewline]
        | SkipJsonSchema[None],
        Query(description="`next_cursor` of the previous page."),
    ] = None,
) -> Response:
    resources, tenant = ctx.resources, ctx.tenant
    limit = min(limit, resources.config.max_page_size)
    after = _decode_cursor(cursor) if cursor else None

    async def load() -> bytes:
        async with resources.read_pool.connection() as conn:
            rows = await resources.store.page(conn, tenant, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        page = {
            "items": [row.document() for row in rows],
            "next_cursor": _encode_cursor(rows[-1].id) if more else None,
        }
        # The items are encoded exactly as a single project is (ProjectRow.document).
        return json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode()

    query = f"after={after or ''}&limit={limit}"
    body: bytes = await resources.cache.get_or_load_list(
        tenant, collection_of(ENTITY_TYPE), query, load, resources.config.list_ttl_s
    )
    return Response(body, media_type=_JSON)


@router.get(
    "/{project_id}",
    response_model=Project,
    responses=error_responses(404),
    summary="Read a project (scope: read)",
)
async def get_project(project_id: UUID, ctx: ReadContext) -> Response:
    resources, tenant = ctx.resources, ctx.tenant

    async def load() -> Versioned | NotFound | None:
        async with resources.read_pool.connection() as conn:
            row = await resources.store.get(conn, tenant, project_id)
        if row is None:
            return None
        if row.deleted:
            return NotFound(row.version)
        return Versioned(row.body(), row.version)

    key = item_key(tenant, ENTITY_TYPE, str(project_id))
    found = await resources.cache.get_or_load(key, load, resources.config.item_ttl_s)
    if found is None:
        raise NotFoundError(f"no project {project_id}")
    if resources.config.view_events:
        _publish_view(resources, tenant, project_id, ctx.caller)
    return Response(found.value, media_type=_JSON, headers={"ETag": f'"{found.version}"'})


def _publish_view(resources: ApiResources, tenant: str, project_id: UUID, caller: Caller) -> None:
    """Best effort: a lost view event is tolerable, a failed read is not."""
    event = AnalyticsEvent.new(
        tenant_id=tenant,
        producer=resources.config.producer,
        name="project_viewed",
        user_id=None if caller.actor_id == "anonymous" else caller.actor_id,
        properties={"project_id": str(project_id)},
        platform="server",
    )
    try:
        resources.publisher.publisher.publish(
            event,
            topic=resources.config.topic(AnalyticsEvent),
            traceparent=caller.traceparent,
            headers=caller.event_headers(),
        )
    except ProducerError as exc:
        reason = type(exc).__name__.lower()
        resources.metrics.events_dropped.labels(AnalyticsEvent.SUBJECT, reason).inc()
        logger.debug("view event of %s dropped: %s", project_id, exc)


async def _update(
    ctx: RequestContext, project_id: UUID, changes: dict[str, Any], if_match: str | None
) -> Response:
    resources, tenant, caller = ctx.resources, ctx.tenant, ctx.caller
    expected = _expected_version(if_match)
    try:
        async with resources.pool.connection() as conn, conn.transaction():
            row = await resources.store.update(
                conn, tenant, project_id, changes, expected_version=expected
            )
            if row is None:
                raise NotFoundError(f"no project {project_id}")
            await _commit_write(
                resources,
                conn,
                tenant,
                row,
                caller,
                action="project.update",
                change=ChangeKind.UPDATED,
                details={"fields": ",".join(sorted(changes))},
            )
    except VersionMismatchError as exc:
        raise PreconditionFailedError(
            f"the project is at version {exc.current_version}, not {expected}",
            current_version=exc.current_version,
        ) from None
    except psycopg.errors.UniqueViolation:
        raise ConflictError(f"a project named {changes.get('name')!r} already exists") from None
    await resources.invalidate_after_write(tenant, ENTITY_TYPE, str(row.id), row.version)
    return _project_response(row)


@router.put(
    "/{project_id}",
    response_model=Project,
    responses=error_responses(400, 404, 409, 412, 413),
    summary="Replace a project (scope: write)",
)
async def replace_project(
    project_id: UUID, body: ProjectReplace, ctx: WriteContext, if_match: IfMatch = None
) -> Response:
    return await _update(ctx, project_id, body.model_dump(mode="json"), if_match)


@router.patch(
    "/{project_id}",
    response_model=Project,
    responses=error_responses(400, 404, 409, 412, 413),
    summary="Change some fields of a project (scope: write)",
)
async def patch_project(
    project_id: UUID, body: ProjectPatch, ctx: WriteContext, if_match: IfMatch = None
) -> Response:
    return await _update(ctx, project_id, body.changes(), if_match)


@router.delete(
    "/{project_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404, 412),
    summary="Delete a project (scope: write)",
)
async def delete_project(project_id: UUID, ctx: WriteContext, if_match: IfMatch = None) -> Response:
    resources, tenant, caller = ctx.resources, ctx.tenant, ctx.caller
    expected = _expected_version(if_match)
    try:
        async with resources.pool.connection() as conn, conn.transaction():
            row = await resources.store.delete(conn, tenant, project_id, expected_version=expected)
            if row is None:
                raise NotFoundError(f"no project {project_id}")
            await _commit_write(
                resources,
                conn,
                tenant,
                row,
                caller,
                action="project.delete",
                change=ChangeKind.DELETED,
                details={},
            )
    except VersionMismatchError as exc:
        raise PreconditionFailedError(
            f"the project is at version {exc.current_version}, not {expected}",
            current_version=exc.current_version,
        ) from None
    await resources.invalidate_after_write(tenant, ENTITY_TYPE, str(row.id), row.version)
    return Response(status_code=status.HTTP_204_NO_CONTENT, headers={"ETag": f'"{row.version}"'})
