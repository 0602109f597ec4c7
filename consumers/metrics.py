"""Prometheus metrics of the batch runtime, registered in an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_BATCH_SIZES = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10000)
_LATENCIES = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ConsumerMetrics:
    """Named counters ready to export; every series carries the ``sink`` label."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "sidestream_consumer_records",
            "Records consumed from Kafka",
            ["sink", "topic"],
            registry=registry,
        )
        self.rows_written = Counter(
            "sidestream_sink_rows_written", "New rows written", ["sink"], registry=registry
        )
        self.duplicates = Counter(
            "sidestream_sink_duplicates_skipped",
            "Records whose event_id was already stored (replays, redrives)",
            ["sink"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "sidestream_batch_size",
            "Records per batch",
            ["sink"],
            buckets=_BATCH_SIZES,
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "sidestream_batch_seconds",
            "Time to write and commit one batch",
            ["sink"],
            buckets=_LATENCIES,
            registry=registry,
        )
        self.dead_letters = Counter(
            "sidestream_dead_letters",
            "Records sent to the dead-letter topic",
            ["sink", "error_class"],
            registry=registry,
        )
        self.retries = Counter(
            "sidestream_batch_retries",
            "Batch attempts retried after a transient error",
            ["sink"],
            registry=registry,
        )
        self.fenced = Counter(
            "sidestream_batch_fenced",
            "Batches rolled back because another worker owns the partition",
            ["sink"],
            registry=registry,
        )
        self.rebalances = Counter(
            "sidestream_rebalances",
            "Partition assignments and revocations",
            ["sink", "kind"],
            registry=registry,
        )
        self.paused = Gauge(
            "sidestream_consumer_paused",
            "1 while waiting for the database",
            ["sink"],
            registry=registry,
        )
        self.offset_out_of_range = Gauge(
            "sidestream_consumer_offset_out_of_range",
            "1 while a partition's stored offset lies outside its log and the worker "
            "refuses to consume it (SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE=refuse)",
            ["sink", "topic", "partition"],
            registry=registry,
        )
        self.offset_resets = Counter(
            "sidestream_consumer_offset_resets",
            "Stored offsets outside the log reset to its start or end (policy earliest/latest)",
            ["sink", "policy"],
            registry=registry,
        )
        self.lag = Gauge(
            "sidestream_consumer_lag",
            "End offset minus committed offset (clamped at 0)",
            ["sink", "topic", "partition"],
            registry=registry,
        )
        self.event_time_lag = Gauge(
            "sidestream_consumer_event_time_lag_seconds",
            "Now minus occurred_at of the oldest event of the last batch",
            ["sink"],
            registry=registry,
        )
