"""A worker process's lifecycle: SIGTERM/SIGINT set a stop event; the exit status says
whether it drained.

Every long-running entry point (sink, delivery and live-analytics workers, the CLI's
``worker run``, test peers) installs :func:`stop_on_signals` once, in the main thread, and
passes the event down; the worker then drains within its own deadline and returns an
:class:`ExitStatus`.
"""

from __future__ import annotations

import logging
import signal
import threading
from enum import IntEnum
from types import FrameType

__all__ = ["ExitStatus", "stop_on_signals"]

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
