"""``sidestream worker run invalidation``: the cache invalidation consumer.

Registered in :data:`sidestream.worker.WORKERS`; the CLI owns the signals (SIGTERM sets
``stop``), ``run_worker`` serves ``/metrics`` and ``/readyz``.
"""

from __future__ import annotations

import threading
from typing import Protocol

from runtime import Settings
from services.invalidation import run_invalidation_worker


class WorkerArgsLike(Protocol):
    """What ``sidestream worker run`` parsed (``sidestream.worker.WorkerArgs``)."""

    @property
    def group(self) -> str | None: ...

    @property
    def topics(self) -> tuple[str, ...] | None: ...

    @property
    def schema(self) -> str | None: ...


def run(config: Settings, stop: threading.Event, args: WorkerArgsLike) -> int:
    """Run the invalidation consumer until ``stop``; the exit code (0: drained)."""
    return int(
        run_invalidation_worker(
            config,
            stop=stop,
            group_id=args.group,
            topics=args.topics,
            schema=args.schema,
        )
    )
