"""``sidestream notifications show|retry``: what the delivery workers are doing, and
manual retries of failed notifications."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.table import Table

from consumers.delivery import (
    list_notifications,
    notification_counts,
    retry_failed,
)
from consumers.delivery.admin import STATUSES
from runtime.clients import postgres_connect
from sidestream.context import console, settings
from sidestream.errors import App, SchemaOption, UsageError, checked, safe

app = App(help="Notification deliveries (email and webhooks).")


def _notification_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a notification id: expected a UUID, as `notifications show` "
            "lists them"
        ) from None


@app.command("show")
def show(
    status: Annotated[
        str | None,
        typer.Option(help=f"List notifications with this status: {', '.join(STATUSES)}."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many to list.")] = 20,
    schema: SchemaOption = None,
) -> None:
    """Counts by status, then the most recently updated notifications."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"choose one of {', '.join(STATUSES)}", param_hint="--status")
    config = settings()
    with postgres_connect(
        config, schema=schema or config.postgres_schema, autocommit=True, connect_timeout=10
    ) as conn:
        counts = notification_counts(conn)
        rows = list_notifications(conn, status, limit)
    console.print(
        "  ".join(f"{name}: [bold]{count}[/]" for name, count in counts.items()), highlight=False
    )
    if not rows:
        return
    table = Table("id", "channel", "recipient", "template", "status", "attempts", "next / error")
    for row in rows:
        detail = (
            f"{row.failure_reason}: {row.last_error}"
            if row.status == "failed"
            else row.next_attempt_at.isoformat(timespec="seconds")
            if row.status == "pending"
            else (row.last_error or "")
        )
        # Recipients, templates and errors come from API callers: never markup.
        table.add_row(
            str(row.notification_id),
            safe(row.channel),
            safe(row.recipient),
            safe(row.template),
            safe(row.status),
            str(row.attempts),
            safe(detail[:80]),
        )
    console.print(table)


@app.command("retry")
def retry(
    ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Notification ids to retry (failed ones only).",
            callback=checked(_notification_id),
        ),
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all", help="Retry every failed notification.")
    ] = False,
    schema: SchemaOption = None,
) -> None:
    """Make failed notifications pending again with a fresh attempt budget."""
    if bool(ids) == all_failed:
        raise UsageError("give notification ids, or --all (not both)")
    config = settings()
    with postgres_connect(
        config, schema=schema or config.postgres_schema, autocommit=True, connect_timeout=10
    ) as conn:
        try:
            changed = retry_failed(conn, "all" if all_failed else (ids or []))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    console.print(f"{changed} notification(s) pending again")
