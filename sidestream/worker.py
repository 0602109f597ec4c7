"""``sidestream worker run NAME`` / ``worker list``: run one worker process until
SIGTERM/SIGINT, or list them.

The workers themselves are declared once, in :mod:`services.workers`. The CLI owns the
signals: SIGTERM or SIGINT sets a stop event, and every worker drains within its deadline.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

import typer

from runtime.lifecycle import stop_on_signals
from runtime.observability import announce_targets, targets_dir
from runtime.production import check_production
from schemas.topics import check_topic_name
from services.workers import WORKERS, WorkerArgs, find_worker
from sidestream.context import console, settings
from sidestream.errors import App, SchemaOption, checked, keep_kafka_log

logger = logging.getLogger(__name__)

app = App(help="Run Sidestream workers.")


def _group_id(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a consumer group id (not empty)")
    return text


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(WORKERS))}")],
    group: Annotated[
        str | None,
        typer.Option(
            help="Consumer group (sink workers; default: sidestream.sink.NAME).",
            callback=checked(_group_id),
        ),
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            help="Topic(s) to read (default: from topics.yaml).",
            callback=checked(check_topic_name),
        ),
    ] = None,
    schema: SchemaOption = None,
) -> None:
    """Run a worker; exit code 0 when it drained cleanly on SIGTERM/SIGINT."""
    try:
        worker = find_worker(name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'NAME'") from None
    stop = threading.Event()
    stop_on_signals(stop, log=logger)
    args = WorkerArgs(name, group, tuple(topic) if topic else None, schema)
    config = settings()
    check_production(config, "worker")  # refuses defaults and plaintext (exit 2)
    keep_kafka_log()  # workers retry: report Kafka outages (one rate-limited line each)
    if config.profile == "local":
        # `make observe` (sidestream observe) finds local workers through these files.
        announce_targets(targets_dir(Path(config.stack_dir).resolve()), name)
    raise typer.Exit(code=worker.run(config, stop, args))


@app.command("list")
def list_workers() -> None:
    """Every worker: name, consumer group, topics, table and what it does."""
    for worker in WORKERS.values():
        reads = f"{worker.group} ← {', '.join(worker.topics)}" if worker.group else "no Kafka input"
        console.print(
            f"[bold]{worker.name:<15}[/] {worker.summary}  [dim]({reads})[/]",
            highlight=False,
            soft_wrap=True,
        )
