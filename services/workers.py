"""Every worker process Sidestream runs, declared once.

``sidestream worker run NAME`` / ``sidestream worker list``, the deploy checks, the chaos
scenarios, the demo and the operator console all read :data:`WORKERS`; adding a worker
means adding one :class:`Worker` to :func:`_declare` — nothing else lists them.

Each worker's ``run`` starts it in this process and blocks until ``stop`` is set (the
caller owns the signals), returning the exit code: 0 when it drained within its deadline.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from consumers import SINKS, WorkerOptions, group_id_for, run_worker
from consumers.delivery import run_notify_worker
from consumers.live_analytics import (
    DEFAULT_APP_ID,
    LiveAnalyticsOptions,
    resolve_topics,
    run_live_analytics,
)
from producers import run_relay
from runtime import Settings
from schemas import EntityChanged
from schemas.topics import topic_for
from services.invalidation_consumer import SINK_NAME as INVALIDATION
from services.invalidation_consumer import run_invalidation_worker

__all__ = ["WORKERS", "Worker", "WorkerArgs", "find_worker", "live_analytics_options"]


@dataclass(frozen=True, slots=True)
class WorkerArgs:
    """What may differ between runs of one worker (tests and replays use fresh names)."""

    name: str
    group: str | None = None
    topics: tuple[str, ...] | None = None
    schema: str | None = None


Runner = Callable[[Settings, threading.Event, WorkerArgs], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    """One worker process: how it runs, and what deployments and operators see of it."""

    name: str
    """``sidestream worker run <name>``; also the Deployment/compose service suffix."""
    summary: str
    run: Runner = field(repr=False, compare=False)
    group: str | None = None
    """Its Kafka consumer group (``None``: it reads no Kafka topic)."""
    topics: tuple[str, ...] = ()
    """The topics it reads by default (from ``schemas/topics.yaml``)."""
    table: str | None = None
    """The main table it writes, for operators (``None``: it writes none of its own)."""


def _sink_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    options = WorkerOptions(
        sink=args.name, group_id=args.group, topics=args.topics, schema=args.schema
    )
    return int(run_worker(config, options, stop=stop, install_signal_handlers=False))


def _relay_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    run_relay(config, stop=stop, schema=args.schema, serve_metrics=True)
    return 0


def _invalidation_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    return int(
        run_invalidation_worker(
            config, stop=stop, group_id=args.group, topics=args.topics, schema=args.schema
        )
    )


def _notify_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    return int(run_notify_worker(config, stop=stop, schema=args.schema))


def live_analytics_options(config: Settings, args: WorkerArgs) -> LiveAnalyticsOptions:
    """The live-analytics worker's options for a run: `args`' names, the settings' store."""
    options = LiveAnalyticsOptions(
        app_id=args.group or DEFAULT_APP_ID,
        topics=args.topics,
        schema=args.schema,
        store=f"{config.live_analytics_store}://",
    )
    if config.live_analytics_data_dir is None:
        return options
    # One folder per app id: faust names its table files after the tables only.
    return replace(options, data_dir=config.live_analytics_data_dir / options.safe_app_id)


def _live_analytics_runner(config: Settings, stop: threading.Event, args: WorkerArgs) -> int:
    options = live_analytics_options(config, args)
    return int(run_live_analytics(config, options, stop=stop, install_signal_handlers=False))


def _declare() -> dict[str, Worker]:
    declared: list[Worker] = []
    for name, factory in SINKS.items():
        sink = factory()
        topic, table = topic_for(sink.event_type), sink.table.name
        declared.append(
            Worker(
                name=name,
                summary=f"sink: {topic} → {table} (batched COPY, exactly once)",
                run=_sink_runner,
                group=group_id_for(name),
                topics=(topic,),
                table=table,
            )
        )
    live_sources, _alerts = resolve_topics(LiveAnalyticsOptions())
    declared += [
        Worker(
            name=INVALIDATION,
            summary="EntityChanged → cache tombstones + L1 evictions",
            run=_invalidation_runner,
            group=group_id_for(INVALIDATION),
            topics=(topic_for(EntityChanged),),
        ),
        Worker(
            name="live-analytics",
            summary="faust windows per tenant x type, spike alerts, live_window_counts",
            run=_live_analytics_runner,
            group=DEFAULT_APP_ID,
            topics=live_sources,
            table="live_window_counts",
        ),
        Worker(
            name="notify",
            summary="delivers pending notifications (webhooks, email) with retries",
            run=_notify_runner,
            table="notification_attempts",
        ),
        Worker(
            name="outbox-relay",
            summary="publishes the transactional outbox to Kafka, in order per key",
            run=_relay_runner,
        ),
    ]
    return {worker.name: worker for worker in declared}


#: Every worker, by name.
WORKERS: Mapping[str, Worker] = MappingProxyType(_declare())


def find_worker(name: str) -> Worker:
    """The worker called ``name``; a ``ValueError`` naming the closest one otherwise."""
    try:
        return WORKERS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(WORKERS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"unknown worker {name!r}{hint} (one of: {', '.join(sorted(WORKERS))})"
        ) from None
