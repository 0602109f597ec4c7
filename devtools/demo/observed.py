"""Figures the demo scrapes from its processes' ``/metrics`` pages before they stop:
dead letters, cache hits and misses, invalidation lag.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devtools.demo.processes import DemoRun


def _samples(url: str) -> list[Any]:
    """Every sample on a /metrics page (empty if unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http URL
            text = response.read().decode()
    except OSError:
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _scrape(url: str, metric: str, **labels: str) -> float:
    """Sum of a metric's samples on a /metrics page whose labels match ``labels``."""
    return float(
        sum(
            sample.value
            for sample in _samples(url)
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items())
        )
    )


def _histogram_quantile(url: str, metric: str, quantile: float) -> float | None:
    """A quantile estimated from a histogram's buckets, as Prometheus does (upper bound)."""
    buckets: dict[float, float] = {}
    for sample in _samples(url):
        if sample.name == f"{metric}_bucket":
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets or max(buckets.values()) == 0:
        return None
    total = buckets[max(buckets)]
    for bound in sorted(buckets):
        if buckets[bound] >= quantile * total:
            return bound
    return None


@dataclass
class Observed:
    """Figures scraped from the processes' /metrics before they stop."""

    dead_letters: int
    cache_hits_l1: float
    cache_hits_redis: float
    cache_misses: float
    invalidation_p50_s: float | None
    invalidation_p99_s: float | None

    @property
    def hit_ratio(self) -> float | None:
        reads = self.cache_hits_l1 + self.cache_hits_redis + self.cache_misses
        return (self.cache_hits_l1 + self.cache_hits_redis) / reads if reads else None


def _observe_dead_letters(demo: DemoRun) -> int:
    return int(sum(_scrape(w.metrics_url, "sidestream_dead_letters_total") for w in demo.workers))


def _observe(demo: DemoRun) -> Observed:
    by_name = {worker.name: worker.metrics_url for worker in demo.workers}
    api, invalidation = by_name["api"], by_name["invalidation"]
    return Observed(
        dead_letters=_observe_dead_letters(demo),
        cache_hits_l1=_scrape(api, "sidestream_cache_hits_total", layer="l1"),
        cache_hits_redis=_scrape(api, "sidestream_cache_hits_total", layer="redis"),
        cache_misses=_scrape(api, "sidestream_cache_misses_total"),
        invalidation_p50_s=_histogram_quantile(
            invalidation, "sidestream_invalidation_lag_seconds", 0.5
        ),
        invalidation_p99_s=_histogram_quantile(
            invalidation, "sidestream_invalidation_lag_seconds", 0.99
        ),
    )
