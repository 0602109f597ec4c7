"""Handing the C heap's free memory back to the operating system (glibc's ``malloc_trim``).

glibc's malloc keeps what a process frees for its next allocations, and gives little of
it back: a thread's arena returns only the free space at its very top, so a few live
chunks above a hole keep the hole resident. A sink worker frees a lot of memory on
threads of its own: librdkafka's broker thread receives each fetch response (up to ~5 MB
from the local broker) into one buffer and allocates a small struct per prefetched record,
all freed once the loop has consumed them; the writer thread builds each batch's COPY
buffer (~1 MB at 5,000 audit rows). Measured on a worker process reading 10 x 100,000
audit events: those arenas held 20-40 MiB of *free* memory, resident, at whatever
high-water mark the prefetch happened to reach — RSS moved between ~145 and ~195 MiB from
round to round with the timing of the producer, not with anything the worker kept.
``malloc_trim(0)`` returns the free pages of every arena (``madvise``; ~0.4 ms per call
there, up to ~3 ms), so RSS follows what is live; the next fetches fault those pages in
again (measured: CPU per row within noise, at most ~2% more). Neither ``MALLOC_ARENA_MAX=2`` nor a
fixed mmap threshold did (see README, Benchmarks).

:class:`FreeMemoryReleaser` decides when: after a committed batch at most once per
interval, and once when the worker goes idle after work. Linux with glibc only; elsewhere
(macOS, musl) there is nothing to call and it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
import time
from collections.abc import Callable

__all__ = ["FreeMemoryReleaser", "can_release_free_memory", "release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The process's own symbols: glibc's malloc_trim when glibc is its C library.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # another C library (musl): no malloc_trim
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def can_release_free_memory() -> bool:
    """Whether :func:`release_free_memory` does anything here (Linux with glibc)."""
    return _malloc_trim() is not None


def release_free_memory() -> bool:
    """Return the free pages of every malloc arena to the operating system
    (``malloc_trim(0)``); False where that is not available (then nothing happens).

    Safe from any thread: glibc locks each arena in turn, and ctypes releases the GIL
    for the call. Costs a walk over the free chunks (sub-millisecond on a sink worker).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class FreeMemoryReleaser:
    """When a batch loop hands free memory back: :meth:`after_batch` (each committed
    batch) releases it if ``interval_s`` passed since the last time, :meth:`when_idle`
    (nothing to do) releases what batches since the last time left behind.

    Bounded cost under load (one call per ``interval_s``), and RSS at rest reflects what
    is live. ``interval_s`` 0 switches it off. ``release`` and ``clock`` are injected
    (tests count calls on a clock of their own).
    """

    def __init__(
        self,
        interval_s: float,
        *,
        release: Callable[[], bool] = release_free_memory,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0 (0 = never), got {interval_s}")
        self._interval_s = interval_s
        self._release = release
        self._clock = clock
        self._released_at: float | None = None
        self._pending = False  # batches were committed since the last release
        self.releases = 0

    @property
    def enabled(self) -> bool:
        return self._interval_s > 0

    def after_batch(self) -> None:
        """A batch was committed: release now if the interval has passed."""
        if not self.enabled:
            return
        self._pending = True
        now = self._clock()
        if self._released_at is None or now - self._released_at >= self._interval_s:
            self._run(now)

    def when_idle(self) -> None:
        """The loop has nothing at hand: release what the batches since the last time freed."""
        if self._pending:
            self._run(self._clock())

    def _run(self, now: float) -> None:
        self._pending = False
        self._released_at = now
        self._release()
        self.releases += 1
