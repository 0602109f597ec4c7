"""A worker's lifecycle: SIGTERM/SIGINT set a stop event; the exit status says whether it
drained; :class:`WorkerThread` runs a worker on a thread of this process instead.

Every long-running entry point (sink, delivery and live-analytics workers, the CLI's
``worker run``, test peers) installs :func:`stop_on_signals` once, in the main thread, and
passes the event down; the worker then drains within its own deadline and returns an
:class:`ExitStatus`.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
from collections.abc import Callable
from enum import IntEnum
from types import FrameType
from typing import Self

from prometheus_client import CollectorRegistry

__all__ = ["ExitStatus", "WorkerThread", "stop_on_signals"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitStatus(IntEnum):
    """The worker's exit code: did it drain cleanly?"""

    DRAINED = 0
    ABANDONED = 1  # the deadline passed with a batch unwritten; it will be re-read


def stop_on_signals(stop: threading.Event, *, log: logging.Logger | None = None) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (logged on ``log`` as "received SIG...: draining").

    Must be called from the main thread (Python delivers signals there only); the handlers
    stay installed for the life of the process.
    """
    out = log or logger

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        out.info("received %s: draining", signal.Signals(signum).name)
        stop.set()

    for sig in _SIGNALS:
        signal.signal(sig, request_stop)


class WorkerThread:
    """A worker on a daemon thread of this process, with its own stop event and metrics
    registry: for tests, benchmarks, demos and replays (production runs processes).

    ``run(stop, registry)`` is the worker's loop (``run_worker``, ``run_live_analytics``,
    ...): it returns an :class:`ExitStatus` once ``stop`` is set and it drained. What it
    raises is kept and re-raised by :meth:`shutdown`.
    """

    def __init__(
        self, run: Callable[[threading.Event, CollectorRegistry], ExitStatus], *, name: str
    ) -> None:
        self.registry = CollectorRegistry()
        self.stop_event = threading.Event()
        self.status: ExitStatus | None = None
        self.error: BaseException | None = None
        self._run_worker = run
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.status = self._run_worker(self.stop_event, self.registry)
        except BaseException as exc:
            self.error = exc
        finally:
            self._ended()

    def _ended(self) -> None:
        """Called on the worker's thread once it returned or raised (a hook)."""

    def start(self) -> Self:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def shutdown(self, timeout: float = 60) -> ExitStatus | None:
        """Ask the worker to drain and wait up to ``timeout`` seconds; re-raises what killed
        it, if anything. None when it is still running (or never returned a status)."""
        self.stop_event.set()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.status

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the worker's own registry (0 if absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0


#: Container allocations between young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def freeze_startup_objects() -> None:
    """Tune the cyclic GC for a batch worker process.

    What the process built at start (modules, clients, compiled decoders) lives as long as
    it does: frozen, a full collection no longer scans it. And a batch holds thousands of
    records alive until it is committed: with CPython's default of a collection every 700
    allocations, each batch is scanned again and again while it is built. Measured on the
    audit sink's fast path: ~9.5 us per record as is, ~6 us frozen with this threshold
    (~7 us with the GC off). Nothing here relies on the GC: cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, max(middle, 20), max(old, 20))


#: How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
SWITCH_INTERVAL_S = 0.0005


def hand_the_gil_over_promptly() -> None:
    """Tune thread switching for a sink worker process with a writer thread.

    The writer thread (`consumers.batch_writer`) spends its time in libpq, without the GIL, and
    needs it back for a moment after each of a batch's round trips (savepoint, COPY chunks,
    offsets, COMMIT) — while the loop's thread is decoding the next batch, pure Python
    that never waits. CPython makes a waiting thread wait up to the switch interval before
    it asks for the GIL: at the default 5 ms the writer lost up to 5 ms per round trip and
    the pipeline gained nothing on a quiet machine (measured: writer thread on ÷ off
    0.86-1.21 at 5 ms, 0.96-1.38 at 0.5 ms, on a quiet two-core machine; see README).
    """
    sys.setswitchinterval(SWITCH_INTERVAL_S)
