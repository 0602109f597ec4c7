"""``sidestream worker run NAME``: run one worker process until SIGTERM/SIGINT.

Sink workers (audit, analytics, notifications) run the consumers' batch runtime; the
outbox relay publishes the transactional outbox. The CLI owns the signals: SIGTERM or
SIGINT sets a stop event, and every worker drains within its deadline.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from prometheus_client import REGISTRY

from consumers import SINKS, WorkerOptions, run_worker
from consumers.delivery import run_notify_worker
from consumers.live_analytics import DEFAULT_APP_ID, LiveAnalyticsOptions, run_live_analytics
from producers import run_relay
from runtime import ObservabilityServer, Settings
from runtime.observability import announce_targets, targets_dir
from sidestream import invalidation_cmd
from sidestream.context import settings
from sidestream.errors import App, SchemaOption, keep_kafka_log

logger = logging.getLogger(__name__)

app = App(help="Run Sidestream workers.")


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    name: str
    group: str | None
    topics: tuple[str, ...] | None
    schema: str | None


Runner = Callable[[Settings, threading.Event, WorkerArgs], int]


def _sink_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    options = WorkerOptions(
        sink=args.name, group_id=args.group, topics=args.topics, schema=args.schema
    )
    return int(run_worker(config, options, stop=stop, install_signal_handlers=False))


def _relay_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    with ObservabilityServer(host=config.metrics_host, port=config.metrics_port, registry=REGISTRY):
        run_relay(config, stop=stop, schema=args.schema)
    return 0


def _live_analytics_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    options = LiveAnalyticsOptions(
        app_id=args.group or DEFAULT_APP_ID, topics=args.topics, schema=args.schema
    )
    return int(run_live_analytics(config, options, stop=stop, install_signal_handlers=False))


def _notify_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    return int(run_notify_worker(config, stop=stop, schema=args.schema))


WORKERS: dict[str, Runner] = {
    **{name: _sink_runner for name in SINKS},
    "outbox-relay": _relay_runner,
    "invalidation": invalidation_cmd.run,
    "notify": _notify_runner,
    "live-analytics": _live_analytics_runner,
}


def _install_signal_handlers(stop: threading.Event) -> None:
    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help=f"One of: {', '.join(sorted(WORKERS))}")],
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group (sink workers; default: sidestream.sink.NAME)."),
    ] = None,
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic(s) to read (default: from topics.yaml).")
    ] = None,
    schema: SchemaOption = None,
) -> None:
    """Run a worker; exit code 0 when it drained cleanly on SIGTERM/SIGINT."""
    runner = WORKERS.get(name)
    if runner is None:
        raise typer.BadParameter(
            f"unknown worker {name!r}; choose one of {', '.join(sorted(WORKERS))}"
        )
    stop = threading.Event()
    _install_signal_handlers(stop)
    args = WorkerArgs(name, group, tuple(topic) if topic else None, schema)
    config = settings()
    keep_kafka_log()  # workers retry: report Kafka outages (one rate-limited line each)
    if config.profile == "local":
        # `make observe` (sidestream observe) finds local workers through these files.
        announce_targets(targets_dir(Path(config.stack_dir).resolve()), name)
    raise typer.Exit(code=runner(config, stop, args))
