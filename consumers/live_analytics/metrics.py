"""Prometheus metrics of the live analytics worker, registered in an injected registry.

faust's own metrics (messages, streams, commits, table operations, rebalances) come from
faust's Prometheus sensor, registered in the same registry with the prefix ``faust_``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SKIP_REASONS", "LiveAnalyticsMetrics"]

_LATENCIES = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SKIP_REASONS = ("late", "undecodable", "unsupported_event", "not_keyed_by_tenant", "redelivered")
"""Why an event is left out of the live counts (the label of ``..._skipped_total``)."""


class LiveAnalyticsMetrics:
    """Named counters ready to export."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "sidestream_live_events",
            "Events counted into the live windows",
            ["topic"],
            registry=registry,
        )
        self.skipped = Counter(
            "sidestream_live_events_skipped",
            "Events left out of the live counts, by reason",
            ["reason"],
            registry=registry,
        )
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        self.windows_closed = Counter(
            "sidestream_live_windows_closed",
            "Windows that became final (one per tenant x event type x window)",
            ["window"],
            registry=registry,
        )
        self.snapshot_rows = Counter(
            "sidestream_live_snapshot_rows",
            "Final window counts upserted into Postgres",
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "sidestream_live_snapshot_seconds",
            "Time to upsert the windows closed by one event",
            buckets=_LATENCIES,
            registry=registry,
        )
        self.snapshot_retries = Counter(
            "sidestream_live_snapshot_retries",
            "Snapshot writes retried after a transient Postgres error",
            registry=registry,
        )
        self.alerts = Counter(
            "sidestream_live_alerts",
            "Alerts emitted (at least once: a restart may emit one again, with the same id)",
            ["rule"],
            registry=registry,
        )
        self.stream_time = Gauge(
            "sidestream_live_stream_time_seconds",
            "Latest event time seen on a source partition (Unix seconds)",
            ["partition"],
            registry=registry,
        )
