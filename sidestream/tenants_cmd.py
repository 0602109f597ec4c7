"""``sidestream tenants create|list`` and ``sidestream keys create|list|revoke``: who may
call the reference API (``services.api.keys``).

A key's secret is printed once, by ``keys create``, and stored only as a keyed hash: keep
it, or make a new key. ``keys list`` names keys by their public id (``ssk_<id>_…``), the
same id the API's logs and audit events use.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
import typer
from rich.markup import escape
from rich.table import Table

from runtime.clients import postgres_connect
from services.api.keys import (
    KEY_PREFIX,
    Scope,
    TenancyError,
    check_key_id,
    check_tenant_id,
    create_key,
    create_tenant,
    list_keys,
    list_tenants,
    revoke_key,
)
from sidestream.context import console, err_console, settings
from sidestream.errors import App, checked

tenants_app = App(help="Tenants of the reference API.", no_args_is_help=True)
keys_app = App(help="API keys of the reference API's tenants.", no_args_is_help=True)

_DURATION = re.compile(r"^(?P<n>[1-9][0-9]{0,5})(?P<unit>[mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

SchemaOption = Annotated[
    str | None,
    typer.Option(
        help="Postgres schema (default: SIDESTREAM_POSTGRES_SCHEMA).",
        # The value reaches libpq's options string: the same pattern as the setting.
        callback=lambda v: _schema(v),
    ),
]


_TENANT_ID = checked(check_tenant_id)


def _schema(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise typer.BadParameter("a schema name: lower-case letters, digits, _ (max 63)")
    return value


def parse_expiry(value: str | None, now: datetime | None = None) -> datetime | None:
    """``--expires``: a duration from now (``90d``, ``12h``, ``30m``, ``2w``) or an ISO
    8601 time (``2027-01-31``, ``2027-01-31T12:00:00Z``; UTC when no offset is given)."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    match = _DURATION.fullmatch(value.strip())
    if match:
        return now + timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            "give a duration (90d, 12h, 30m, 2w) or an ISO time (2027-01-31T12:00:00Z)",
            param_hint="--expires",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fail(exc: TenancyError) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    return typer.Exit(code=1)


@contextlib.contextmanager
def _database(schema: str | None) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the tenants' schema. A server that is away or a missing table is
    reported by the CLI's wrapper (:mod:`sidestream.errors`): one line, exit 1."""
    with postgres_connect(settings(), schema=schema, autocommit=True, connect_timeout=10) as conn:
        yield conn


@tenants_app.command("create")
def tenants_create(
    tenant: Annotated[
        str, typer.Argument(help="Tenant id: the {tenant} of API paths.", callback=_TENANT_ID)
    ],
    name: Annotated[str, typer.Option(help="A display name.")] = "",
    schema: SchemaOption = None,
) -> None:
    """Create a tenant (then give it keys with `sidestream keys create`)."""
    with _database(schema) as conn:
        try:
            record = create_tenant(conn, tenant, name)
        except TenancyError as exc:
            raise _fail(exc) from None
    console.print(f"created tenant {escape(record.tenant_id)}", highlight=False)


@tenants_app.command("list")
def tenants_list(schema: SchemaOption = None) -> None:
    """Every tenant, with its number of active keys."""
    with _database(schema) as conn:
        records = list_tenants(conn)
    table = Table("tenant", "name", "created", "active keys")
    for record in records:
        table.add_row(
            escape(record.tenant_id),
            escape(record.name),
            record.created_at.isoformat(timespec="seconds"),
            str(record.active_keys),
        )
    console.print(table)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts in.", callback=_TENANT_ID)],
    scope: Annotated[
        list[Scope] | None,
        typer.Option(
            help="What the key may do (repeat for several): read, write (includes read), "
            "notify, admin (everything), act-as (may name the end user in X-Actor-ID).",
        ),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help="Expiry: a duration (90d, 12h) or an ISO time; default: never."),
    ] = None,
    description: Annotated[str, typer.Option(help="What the key is for.")] = "",
    schema: SchemaOption = None,
) -> None:
    """Make an API key; its secret is printed once (stdout: only the key, for scripts)."""
    expires_at = parse_expiry(expires)
    config = settings()
    with _database(schema) as conn:
        try:
            new = create_key(
                conn,
                tenant,
                scopes=[s.value for s in (scope or [Scope.READ])],
                hash_key=config.api_key_hash_secret.get_secret_value().encode(),
                expires_at=expires_at,
                description=description,
            )
        except TenancyError as exc:
            raise _fail(exc) from None
    record = new.record
    err_console.print(
        f"created key {KEY_PREFIX}{record.key_id}_… for tenant {escape(record.tenant_id)}"
        f" (scopes: {', '.join(record.scopes)}; expires: "
        f"{record.expires_at.isoformat(timespec='seconds') if record.expires_at else 'never'})."
        " The secret is shown once:",
        highlight=False,
    )
    # Plain print: the token on stdout alone, so `$(sidestream keys create ...)` works.
    print(new.token)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's keys.", callback=_TENANT_ID)
    ] = None,
    schema: SchemaOption = None,
) -> None:
    """Keys by id (never their secrets), with scopes and status."""
    with _database(schema) as conn:
        records = list_keys(conn, tenant)
    table = Table("key", "tenant", "scopes", "status", "created", "expires", "description")
    now = datetime.now(UTC)
    for record in records:
        table.add_row(
            f"{KEY_PREFIX}{record.key_id}_…",
            escape(record.tenant_id),
            ", ".join(record.scopes),
            record.status(now),
            record.created_at.isoformat(timespec="seconds"),
            record.expires_at.isoformat(timespec="seconds") if record.expires_at else "never",
            escape(record.description),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[
        str,
        typer.Argument(
            help="The key id (or the key, or its ssk_<id> prefix).", callback=checked(check_key_id)
        ),
    ],
    tenant: Annotated[
        str | None, typer.Option(help="Only if the key is this tenant's.", callback=_TENANT_ID)
    ] = None,
    schema: SchemaOption = None,
) -> None:
    """Revoke a key: every API process refuses it within SIDESTREAM_API_KEY_CACHE_TTL_S."""
    key_id = key.removeprefix(KEY_PREFIX)[:16]
    with _database(schema) as conn:
        found = revoke_key(conn, key_id, tenant_id=tenant)
    if not found:
        err_console.print(f"[bold red]error:[/] no key {escape(key_id)}", highlight=False)
        raise typer.Exit(code=1)
    console.print(f"revoked {KEY_PREFIX}{escape(key_id)}_…", highlight=False)
