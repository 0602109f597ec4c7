"""Calling a loader: under its timeout, timed and counted, into the entry to store.

:class:`EntryLoader` is the one place a :class:`~services.cache.VersionedCache` calls the
source of truth (misses, early recomputes, degraded reads): it bounds the call by
``loader_timeout_ms``, records how long it took (the entry's ``delta_ms``, which XFetch
uses), caps a "not found" at ``negative_ttl_ms`` and jitters the TTL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.cache.entry import Entry, Kind, NotFound, Versioned, encode_value
from services.cache.errors import LoaderTimeoutError
from services.cache.metrics import CacheMetrics
from services.cache.policy import jittered_ttl_ms

#: An async callable reading the entity from the source of truth.
Loader = Callable[[], Awaitable[Versioned | NotFound | None]]
#: An async callable computing a list/query result (any cacheable value).
ListLoader = Callable[[], Awaitable[Any]]


class EntryLoader:
    """Calls loaders for one cache namespace (the arguments are the cache's own)."""

    def __init__(
        self,
        *,
        namespace: str,
        metrics: CacheMetrics,
        ttl_jitter: float,
        negative_ttl_ms: int,
        loader_timeout_ms: int,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        self._jitter = ttl_jitter
        self._negative_ttl = negative_ttl_ms / 1000
        self._loader_timeout_ms = loader_timeout_ms
        self._clock = clock
        self._random = random
        self._loads = metrics.loads.labels(namespace)
        self._loader_errors = metrics.loader_errors.labels(namespace)
        self._load_seconds = metrics.load_seconds.labels(namespace)

    async def load(self, name: str, loader: Loader, ttl: float) -> tuple[Entry, int]:
        """Call the loader under its timeout; the entry to store and its TTL in ms."""
        self._loads.inc()
        started = self._clock()
        timer = time.perf_counter()
        bound = asyncio.timeout(self._loader_timeout_ms / 1000)
        try:
            async with bound:
                result = await loader()
        except TimeoutError as exc:
            self._loader_errors.inc()
            if bound.expired():
                raise LoaderTimeoutError(name, self._loader_timeout_ms) from exc
            raise
        except Exception:
            self._loader_errors.inc()
            raise
        finally:
            self._load_seconds.observe(time.perf_counter() - timer)
        finished = self._clock()
        delta_ms = max(0, round((finished - started) * 1000))
        if result is None:
            result = NotFound()
        if isinstance(result, NotFound):
            kind, payload = Kind.NOT_FOUND, b""
            ttl = min(ttl, self._negative_ttl)
        elif isinstance(result, Versioned):
            kind, payload = encode_value(result.value)
        else:
            raise TypeError(
                f"loader for {name!r} returned {type(result).__name__}; "
                "expected Versioned, NotFound or None"
            )
        ttl_ms = jittered_ttl_ms(ttl, self._jitter, self._random())
        expiry_ms = round(finished * 1000) + ttl_ms
        return Entry(kind, result.version, delta_ms, expiry_ms, payload), ttl_ms
