"""``/v1/tenants/{tenant}/link-hosts``: the hosts a tenant's emails may link to.

Email templates interpolate ``params`` (``password_reset`` puts ``reset_url`` in an
``href``), so whoever may request a notification could otherwise send a genuine-looking
email from the platform with a link anywhere. :func:`check_links` runs when an email
notification is requested: every URL-like text in any param value (``scheme://…``,
``//host…``, ``www.…``, with ``\\`` read as ``/`` as browsers do) must be http(s) and
its host must be on the tenant's list — an exact name, or ``*.domain`` for its
subdomains. ``javascript:``, ``data:``, ``vbscript:`` and ``file:`` are refused
anywhere. Otherwise the request is a 422 whose detail names the param and the host.
An empty list allows no links at all.

Not covered: a bare domain without scheme or ``www.`` (``evil.example/reset``), which
some mail clients turn into a link on their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas import AuditEvent, AuditOutcome
from services.api.auth import Scope, require_scope, tenant_router
from services.api.deps import RequestContext
from services.api.errors import error_responses
from services.api.webhook_endpoints import UnprocessableError

__all__ = ["LinkHosts", "check_links", "find_links", "router"]

# The auth branch swaps these for ``require_scope(...)`` like every tenant route.
# Reading needs `read`; changing where a tenant's emails may link needs `admin`.
ReadContext = Annotated[RequestContext, require_scope(Scope.READ)]
WriteContext = Annotated[RequestContext, require_scope(Scope.ADMIN)]

_LINK = re.compile(
    r"""(?ix)
      [a-z][a-z0-9+.-]*:[/\\]{2}[^\s<>"'`]*     # scheme://…  (also scheme:\\…)
    | (?<![\w/\\:])[/\\]{2}[^\s<>"'`/\\]+[^\s<>"'`]*   # //host… (protocol-relative)
    | \bwww\.[^\s<>"'`]+                       # www.… (auto-linked by mail clients)
    """
)
_DANGEROUS = re.compile(r"(?i)\b(?:javascript|vbscript|data|file)\s*:")

Host = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        min_length=1,
        max_length=253,
        pattern=r"^(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?$",
    ),
]

router = tenant_router("/link-hosts", tags=["email link allowlist"])


class LinkHosts(BaseModel):
    """Hosts the tenant's emails may link to: names, or ``*.domain`` for subdomains."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[Host] = Field(max_length=100)


def find_links(value: str) -> list[str]:
    """The URL-like parts of ``value`` (see the module docstring)."""
    return [match.group(0) for match in _LINK.finditer(value)]


def _host_of(link: str) -> tuple[str | None, str]:
    """(host, scheme) of a link found by :func:`find_links`."""
    text = link.replace("\\", "/")
    if text.lower().startswith("www."):
        text = "http://" + text
    elif text.startswith("//"):
        text = "http:" + text
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return None, ""
    return (host.rstrip(".") if host else None), parts.scheme.lower()


def _allowed(host: str, allowed: set[str]) -> bool:
    if host in allowed:
        return True
    labels = host.split(".")
    return any(f"*.{'.'.join(labels[i:])}" in allowed for i in range(1, len(labels)))


async def _hosts(ctx: RequestContext) -> list[str]:
    async with ctx.resources.pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT host FROM tenant_link_hosts WHERE tenant_id = %s ORDER BY host",
            (ctx.tenant,),
        )
        return [str(row[0]) for row in await cursor.fetchall()]


async def check_links(ctx: RequestContext, params: Mapping[str, str]) -> None:
    """Refuse params that link outside the tenant's allowlist.

    Raises:
        UnprocessableError: naming the param and the offending link's host or scheme.
    """
    found: list[tuple[str, str]] = []
    for key, value in params.items():
        if _DANGEROUS.search(value):
            raise UnprocessableError(
                f"params.{key}: javascript:, data:, vbscript: and file: links are not allowed"
            )
        found.extend((key, link) for link in find_links(value))
    if not found:
        return  # no database round trip for the usual email without links
    allowed = set(await _hosts(ctx))
    for key, link in found:
        host, scheme = _host_of(link)
        if scheme not in ("http", "https") or not host:
            raise UnprocessableError(f"params.{key}: only http(s) links with a host are allowed")
        if not _allowed(host, allowed):
            raise UnprocessableError(
                f"params.{key}: links may only point to this tenant's link hosts "
                f"(PUT /v1/tenants/{ctx.tenant}/link-hosts); {host!r} is not one"
            )


@router.get("", response_model=LinkHosts, summary="The hosts this tenant's emails may link to")
async def get_link_hosts(ctx: ReadContext) -> LinkHosts:
    return LinkHosts(hosts=await _hosts(ctx))


@router.put(
    "",
    response_model=LinkHosts,
    responses=error_responses(400, 413),
    summary="Replace the hosts emails may link to",
)
async def put_link_hosts(body: LinkHosts, ctx: WriteContext) -> LinkHosts:
    resources, caller = ctx.resources, ctx.caller
    hosts = sorted(set(body.hosts))
    async with resources.pool.connection() as conn, conn.transaction():
        await conn.execute("DELETE FROM tenant_link_hosts WHERE tenant_id = %s", (ctx.tenant,))
        if hosts:
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO tenant_link_hosts (tenant_id, host) VALUES (%s, %s)",
                    [(ctx.tenant, host) for host in hosts],
                )
        event = AuditEvent.new(
            tenant_id=ctx.tenant,
            producer=resources.config.producer,
            actor_id=caller.actor_id,
            action="link_hosts.replace",
            resource_type="link_hosts",
            resource_id=ctx.tenant,
            outcome=AuditOutcome.SUCCESS,
            ip=caller.ip,
            details={"hosts": ",".join(hosts)[:1000], "request_id": caller.request_id},
        )
        await resources.outbox.add_many(
            conn,
            [(event, resources.config.topic(AuditEvent), caller.event_headers())],
            traceparent=caller.traceparent,
        )
    return LinkHosts(hosts=hosts)
