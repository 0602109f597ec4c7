"""Per-destination circuit breakers and concurrency caps, so one dead endpoint cannot
stall the deliveries to every other one.

A :class:`CircuitBreaker` opens after ``failure_threshold`` consecutive failures
(5xx, timeouts, connection errors) of its destination. While open, deliveries to that
destination are rescheduled without an attempt. After ``cooldown_s`` it is half-open: one
probe goes through; success closes it, failure opens it for another cool-down.

A :class:`HostLimiter` caps the deliveries in flight per destination
(an :class:`asyncio.Semaphore` each) and reports which destinations are saturated, so the
worker does not claim more rows for them while they are busy.

Both are per worker process (in memory): each worker learns about a dead host on its own,
after at most ``failure_threshold`` attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass


class CircuitState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class CircuitBreaker:
    """The breaker of one destination; times come from the injected ``clock``."""

    failure_threshold: int
    cooldown_s: float
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    opened_at: float | None = None
    probe_in_flight: bool = False

    def state(self) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if self.clock() - self.opened_at < self.cooldown_s:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def blocked(self) -> bool:
        """True if a delivery may not start now (open, or half-open with its probe out).

        Does not change the state: use it to skip work early, then :meth:`acquire`."""
        state = self.state()
        return state is CircuitState.OPEN or (
            state is CircuitState.HALF_OPEN and self.probe_in_flight
        )

    def acquire(self) -> bool:
        """May a delivery start now? In half-open state the first caller becomes the probe."""
        state = self.state()
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def remaining_s(self) -> float:
        """Seconds until the circuit lets a probe through (0 if closed or half-open)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_in_flight = False

    def record_failure(self) -> None:
        self.failures += 1
        if self.probe_in_flight or self.failures >= self.failure_threshold:
            # The probe failed (or the threshold was reached): a new cool-down starts.
            self.opened_at = self.clock()
        self.probe_in_flight = False

    def record_neutral(self) -> None:
        """The destination answered without proving it healthy or dead (429): a probe
        slot is freed, counts stay as they are."""
        self.probe_in_flight = False


class CircuitBreakers:
    """One :class:`CircuitBreaker` per destination, created on first use."""

    def __init__(
        self,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s > 0")
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, destination: str) -> CircuitBreaker:
        breaker = self._breakers.get(destination)
        if breaker is None:
            breaker = CircuitBreaker(self._threshold, self._cooldown_s, self._clock)
            self._breakers[destination] = breaker
        return breaker

    def forget_healthy(self) -> None:
        """Drop closed breakers without failures, so the map only holds troubled hosts."""
        for destination, breaker in list(self._breakers.items()):
            if breaker.opened_at is None and breaker.failures == 0:
                del self._breakers[destination]

    def open_count(self) -> int:
        """Destinations whose circuit is open or half-open."""
        return sum(1 for b in self._breakers.values() if b.opened_at is not None)


@dataclass(slots=True)
class _Slot:
    semaphore: asyncio.Semaphore
    holders: int = 0  # waiting for the semaphore or holding it


class HostLimiter:
    """At most ``limit`` deliveries in flight per destination."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._limit = limit
        self._slots: dict[str, _Slot] = {}

    @contextlib.asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        """Wait for (and hold) one of ``destination``'s slots."""
        slot = self._slots.get(destination)
        if slot is None:
            slot = self._slots[destination] = _Slot(asyncio.Semaphore(self._limit))
        slot.holders += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.holders -= 1
            if slot.holders == 0:
                del self._slots[destination]  # idle: keep the map small

    def saturated(self) -> list[str]:
        """Destinations with every slot taken (or waited for): claim nothing more for them."""
        return [d for d, slot in self._slots.items() if slot.holders >= self._limit]
