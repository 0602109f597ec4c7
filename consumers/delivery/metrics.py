"""Prometheus metrics of the delivery workers, registered in an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCIES = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ATTEMPTS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20)


class DeliveryMetrics:
    """Named counters ready to export; ``channel`` is ``email`` or ``webhook``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "sidestream_delivery_sent",
            "Notifications delivered",
            ["channel"],
            registry=registry,
        )
        self.failed = Counter(
            "sidestream_delivery_failed",
            "Notifications given up on (reason: permanent, exhausted, expired)",
            ["channel", "reason"],
            registry=registry,
        )
        self.retried = Counter(
            "sidestream_delivery_retried",
            "Attempts that failed transiently and scheduled a retry",
            ["channel"],
            registry=registry,
        )
        self.deferred = Counter(
            "sidestream_delivery_deferred",
            "Claims released without an attempt (reason: circuit_open, lease)",
            ["channel", "reason"],
            registry=registry,
        )
        self.fenced = Counter(
            "sidestream_delivery_fenced",
            "Results not applied because the claim had passed to another worker",
            ["channel"],
            registry=registry,
        )
        self.errors = Counter(
            "sidestream_delivery_errors",
            "Deliveries that raised unexpectedly (the lease expires and they are retried)",
            ["channel"],
            registry=registry,
        )
        self.latency = Histogram(
            "sidestream_delivery_attempt_seconds",
            "Duration of one delivery attempt",
            ["channel", "outcome"],
            buckets=_LATENCIES,
            registry=registry,
        )
        self.attempts = Histogram(
            "sidestream_delivery_attempts_per_notification",
            "Attempts a notification took to be sent or given up on",
            ["channel", "status"],
            buckets=_ATTEMPTS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "sidestream_delivery_in_flight",
            "Claimed notifications in this worker (sending or waiting for a slot)",
            registry=registry,
        )
        self.oldest_pending_age = Gauge(
            "sidestream_delivery_oldest_pending_age_seconds",
            "Age of the oldest notification not yet sent or failed (0 if none)",
            registry=registry,
        )
        self.open_circuits = Gauge(
            "sidestream_delivery_open_circuits",
            "Destinations whose circuit breaker is open or half-open in this worker",
            registry=registry,
        )
        self.dead_letters = Counter(
            "sidestream_delivery_dead_letters",
            "Failed notifications copied to the dead-letter topic",
            ["channel"],
            registry=registry,
        )
        self.db_errors = Counter(
            "sidestream_delivery_db_errors",
            "Transient Postgres errors (the worker backs off and carries on)",
            ["operation"],
            registry=registry,
        )
