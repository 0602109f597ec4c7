"""Holding a replay to a rate (records per second) without touching the batch runtime.

The replay runs the ordinary sink worker (:func:`consumers.run_worker`); the runtime has
no pacing hook, so the sink handed to it is wrapped: :class:`ThrottledSink` waits for
its :class:`RateLimiter` before passing each batch on. The wait happens inside the
batch's transaction (before any row is written), so replays cap the batch size to keep
every wait short (see :func:`paced_batch_size`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from consumers.records import Record
from consumers.sink import Sink
from schemas import Event

#: The longest a throttled batch should wait, in seconds: the batch size follows from it.
MAX_PAUSE_S = 0.25


def paced_batch_size(rate: float, max_records: int) -> int:
    """A batch size that keeps each pause at ``rate`` under :data:`MAX_PAUSE_S`."""
    return max(1, min(max_records, int(rate * MAX_PAUSE_S)))


class RateLimiter:
    """Lets through at most ``rate`` units per second on average (bursts: one request).

    Each :meth:`acquire` books its units after the previous booking ends and sleeps
    until its own slot starts; the first one passes at once.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._free_at: float | None = None

    def acquire(self, units: int) -> float:
        """Wait for room for ``units``; returns the seconds waited."""
        now = self._clock()
        start = now if self._free_at is None else max(now, self._free_at)
        waited = start - now
        if waited > 0:
            self._sleep(waited)
        self._free_at = start + units / self.rate
        return waited


class ThrottledSink:
    """A sink that waits for a :class:`RateLimiter` before writing each batch."""

    def __init__(self, inner: Sink, limiter: RateLimiter) -> None:
        self._inner = inner
        self._limiter = limiter

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def event_type(self) -> type[Event]:
        return self._inner.event_type

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        self._limiter.acquire(len(records))
        return self._inner.write(records, tx)
