"""``sidestream dev up|down|status``: the local Kafka, Postgres and Redis."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from consumers.ops.positions import forget_topics
from devtools.localstack import LocalStack, ServerStatus
from producers import apply_topics, plan_topics
from runtime.clients import kafka_admin, postgres_connect
from schemas.topics import load_topics
from sidestream.context import console, settings
from sidestream.errors import App, CliError, SchemaOption, safe

app = App(help="Start, stop and inspect the local stack (Kafka, Postgres, Redis).")


def _table(statuses: list[ServerStatus]) -> Table:
    table = Table(title="local stack")
    for column in ("server", "pid", "address", "health", "detail"):
        table.add_column(column)
    for status in statuses:
        health = "[green]healthy[/]" if status.healthy else "[red]down[/]"
        table.add_row(status.name, str(status.pid or "-"), status.address, health, status.detail)
    return table


@app.command()
def up() -> None:
    """Start every server that is not running and wait until each answers a client."""
    stack = LocalStack(settings())
    with console.status("starting the local stack..."):
        statuses = stack.up()
    console.print(_table(statuses))
    console.print(f"data and logs: {settings().stack_dir.resolve()}")


@app.command()
def down() -> None:
    """Stop the servers `up` started (by PID); nothing is deleted."""
    for name, was_running in LocalStack(settings()).down():
        console.print(f"{name}: {'stopped' if was_running else 'was not running'}")


@app.command()
def status() -> None:
    """Show each server's PID, address and health; exit 1 if any is down."""
    statuses = LocalStack(settings()).status()
    console.print(_table(statuses))
    if not all(s.healthy for s in statuses):
        raise typer.Exit(code=1)


@app.command("reset-topics")
def reset_topics(
    yes: Annotated[
        bool, typer.Option("--yes", help="Really delete every record of the topics.")
    ] = False,
    schema: SchemaOption = None,
) -> None:
    """Delete and recreate every topic of topics.yaml (dead-letter topics too) and forget
    the offsets and redrive ledger kept for them in Postgres. Local stack only; stop the
    workers first.

    The local broker reads a partition made of many small record batches extremely
    slowly (README: known limits); a low-rate topic gets there after days of local use.
    """
    config = settings()
    if config.profile != "local":
        raise CliError(
            "dev reset-topics deletes every record: it is for the local stack only "
            "(SIDESTREAM_PROFILE=local)",
            2,
        )
    specs = load_topics()
    names = [spec.name for spec in specs]
    if not yes:
        raise CliError(
            f"this deletes every record of {len(names)} topics ({', '.join(names)}) and "
            "their stored offsets: stop the workers, then pass --yes",
            2,
        )
    admin = kafka_admin(config)
    existing = set(admin.list_topics(timeout=10).topics)
    gone = [name for name in names if name in existing]
    if gone:
        for name, future in admin.delete_topics(gone, operation_timeout=30).items():
            future.result(timeout=30)
            console.print(f"deleted {safe(name)}", highlight=False)
    for line in apply_topics(admin, plan_topics(admin, specs)):
        console.print(safe(line), highlight=False)
    target = schema or config.postgres_schema
    with postgres_connect(config, autocommit=True, connect_timeout=10) as conn:
        forgotten = forget_topics(conn, target, names)
    for table, count in forgotten.items():
        console.print(f"forgot {count} row(s) of {table} in schema {target}", highlight=False)
