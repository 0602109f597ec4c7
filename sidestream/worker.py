"""``sidestream worker run NAME``: run one worker process until SIGTERM."""

from __future__ import annotations

from typing import Annotated

import typer

from consumers import SINKS, WorkerOptions, run_worker
from sidestream.context import settings

app = typer.Typer(help="Run Sidestream workers.")

WORKERS = sorted(SINKS)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(WORKERS)}")],
    group: Annotated[
        str | None, typer.Option(help="Consumer group (default: sidestream.sink.NAME).")
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic(s) to read (default: from topics.yaml).")
    ] = None,
    schema: Annotated[
        str | None, typer.Option(help="Postgres schema to write (e.g. a shadow schema).")
    ] = None,
) -> None:
    """Run a worker; exit code 0 when it drained cleanly on SIGTERM/SIGINT."""
    if name not in SINKS:
        raise typer.BadParameter(f"unknown worker {name!r}; choose one of {', '.join(WORKERS)}")
    options = WorkerOptions(
        sink=name, group_id=group, topics=tuple(topic) if topic else None, schema=schema
    )
    status = run_worker(settings(), options)
    raise typer.Exit(code=int(status))
