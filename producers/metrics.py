"""Prometheus metrics of publishers and outbox relays, registered in an injected registry.

Each family is registered once per registry (:meth:`for_registry`), so several publishers
or relays in one process share it and tell themselves apart by label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.observability import PerRegistry

_LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class PublisherMetrics(PerRegistry):
    """Every series carries the ``producer`` label (the service name)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "sidestream_events_published",
            "Events validated, encoded and queued for Kafka",
            ["producer", "topic"],
            registry=registry,
        )
        self.delivered = Counter(
            "sidestream_events_delivered",
            "Events acknowledged by Kafka",
            ["producer", "topic"],
            registry=registry,
        )
        self.failed = Counter(
            "sidestream_events_delivery_failed",
            "Events Kafka never acknowledged (timed out, rejected, purged)",
            ["producer", "topic"],
            registry=registry,
        )
        self.backpressure = Counter(
            "sidestream_publish_backpressure",
            "publish() calls rejected because the local queue was full",
            ["producer", "topic"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "sidestream_producer_queue_depth",
            "Messages queued or in flight, not yet reported",
            ["producer"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "sidestream_delivery_latency_seconds",
            "Time from publish() to the broker's acknowledgement",
            ["producer"],
            buckets=_LATENCIES,
            registry=registry,
        )
        self.producer_rebuilds = Counter(
            "sidestream_producer_rebuilds",
            "Kafka producers replaced after a fatal or fencing error",
            ["producer"],
            registry=registry,
        )


class RelayMetrics(PerRegistry):
    """Every series carries the ``schema`` label: the schema of the outbox table."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge(
            "sidestream_outbox_pending",
            "Outbox rows not yet sent to Kafka",
            ["schema"],
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "sidestream_outbox_oldest_pending_age_seconds",
            "Age of the oldest unsent outbox row (0 when none)",
            ["schema"],
            registry=registry,
        )
        self.relayed = Counter(
            "sidestream_outbox_relayed",
            "Outbox rows delivered to Kafka and marked sent",
            ["schema"],
            registry=registry,
        )
        self.failures = Counter(
            "sidestream_outbox_relay_failures",
            "Relay rounds that failed (rows stay pending and are retried)",
            ["schema", "reason"],
            registry=registry,
        )
        self.wakeups = Counter(
            "sidestream_outbox_relay_wakeups",
            "Why an idle relay looked for rows again: a NOTIFY or the polling fallback",
            ["schema", "reason"],
            registry=registry,
        )
        self.pruned = Counter(
            "sidestream_outbox_pruned",
            "Sent outbox rows deleted after the retention",
            ["schema"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "sidestream_outbox_batch_seconds",
            "Claim, publish, wait for delivery and mark one batch",
            ["schema"],
            buckets=_LATENCIES,
            registry=registry,
        )
