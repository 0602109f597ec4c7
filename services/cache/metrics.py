"""Prometheus metrics of the cache, in an injected registry.

Every series carries a ``cache`` label (the namespace), so several caches can share one
registry; they then share one set of collectors, which :meth:`CacheMetrics.for_registry`
hands out (a registry refuses the same metric name twice).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from runtime.observability import PerRegistry


class CacheMetrics(PerRegistry):
    """The cache's counters; get them with :meth:`for_registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(f"sidestream_cache_{name}", doc, ["cache", *labels], registry=registry)

        self.hits = counter("hits", "Reads answered from the cache, by layer (l1, redis).", "layer")
        self.misses = counter("misses", "Reads that found no usable entry (incl. tombstones).")
        self.loads = counter("loads", "Loader calls (misses, early recomputes, degraded reads).")
        self.loader_errors = counter("loader_errors", "Loader calls that raised or timed out.")
        self.lock_waits = counter("lock_waits", "Reads that waited for another process's fill.")
        self.lock_wait_timeouts = counter(
            "lock_wait_timeouts", "Waits that hit the bound, after which the reader loaded."
        )
        self.early_recomputes = counter("early_recomputes", "XFetch recomputations before expiry.")
        self.stale_fills_refused = counter(
            "stale_fills_refused", "Fills refused because Redis held a newer version/tombstone."
        )
        self.degraded_reads = counter(
            "degraded_reads", "Reads served by the loader because Redis was unreachable."
        )
        self.l1_evictions = counter(
            "l1_evictions",
            "Entries dropped from the L1 (capacity, invalidation, resubscribe, ...).",
            "reason",
        )
        self.invalidations = counter("invalidations", "Keys invalidated (tombstone requested).")
        self.load_seconds = Histogram(
            "sidestream_cache_load_seconds",
            "Loader duration.",
            ["cache"],
            registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
