"""Entry point of the ``sidestream`` command."""

from __future__ import annotations

import sys

import typer

from runtime import RuntimeSetupError
from sidestream import (
    api_cmd,
    console_cmd,
    db,
    demo,
    deploy_check,
    dev,
    dlq_cmd,
    lag_cmd,
    load_cmd,
    notifications_cmd,
    observe_cmd,
    replay_cmd,
    schemas_cmd,
    topics_cmd,
    worker,
)
from sidestream.bench import cli as bench_cli
from sidestream.chaos import cli as chaos_cli
from sidestream.context import err_console

app = typer.Typer(
    help="Sidestream: take slow side effects off the request path.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(db.app, name="db")
app.add_typer(worker.app, name="worker")
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(topics_cmd.app, name="topics")
app.command(name="demo")(demo.run)
app.add_typer(load_cmd.app, name="load")
app.add_typer(api_cmd.app, name="api")
app.add_typer(notifications_cmd.app, name="notifications")
app.add_typer(deploy_check.app, name="deploy")
app.add_typer(observe_cmd.app, name="observe")
app.command("replay")(replay_cmd.replay)
app.add_typer(dlq_cmd.app, name="dlq")
app.command("lag")(lag_cmd.lag)
app.add_typer(bench_cli.app, name="bench")
app.add_typer(chaos_cli.app, name="chaos")
app.add_typer(console_cmd.app, name="console")


def main() -> None:
    """Run the CLI; configuration and stack problems print one line and exit 2."""
    try:
        app()
    except RuntimeSetupError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
