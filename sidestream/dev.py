"""``sidestream dev up|down|status``: the local Kafka, Postgres and Redis."""

from __future__ import annotations

import typer
from rich.table import Table

from runtime.localstack import LocalStack, ServerStatus
from sidestream.context import console, settings
from sidestream.errors import App

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
