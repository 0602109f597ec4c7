"""``sidestream db migrate``: create or upgrade every Sidestream table."""

from __future__ import annotations

from typing import Annotated

from runtime.clients import postgres_connect
from runtime.migrations import migrate
from services import MIGRATION_SOURCES
from sidestream.context import console, settings
from sidestream.errors import App, schema_typed

app = App(help="Database schema management.")


@app.command("migrate")
def migrate_command(
    schema: Annotated[
        str | None,
        schema_typed("Target schema (default: SIDESTREAM_POSTGRES_SCHEMA), e.g. a shadow."),
    ] = None,
) -> None:
    """Apply pending migrations (versioned, idempotent, safe to run concurrently)."""
    target = schema or settings().postgres_schema
    with postgres_connect(settings(), autocommit=True, connect_timeout=10) as conn:
        applied = migrate(conn, MIGRATION_SOURCES, schema=target)
    if applied:
        for migration in applied:
            console.print(f"applied {migration.source} {migration.version:04d}_{migration.name}")
    else:
        console.print(f"schema {target} is up to date")
