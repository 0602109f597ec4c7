"""Requests in flight, so the console's background work can step aside while a page
renders: a Python thread busy decoding dead letters holds the GIL against the page's
thread (each of its waits on Postgres or the broker would cost up to a switch interval,
5 ms, to get the GIL back)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Foreground"]


class Foreground:
    """Counts requests being served; background work calls :meth:`wait_idle` between
    small steps."""

    def __init__(self) -> None:
        self._serving = 0
        self._idle = threading.Condition()

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Mark one request in flight for the block."""
        with self._idle:
            self._serving += 1
        try:
            yield
        finally:
            with self._idle:
                self._serving -= 1
                if not self._serving:
                    self._idle.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight, at most ``timeout_s`` (so a steady stream
        of requests slows background work down but never stops it); True when idle."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._serving, timeout_s)
