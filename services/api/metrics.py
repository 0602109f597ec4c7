"""RED metrics of the API (rate, errors, duration) and its side channels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from runtime.observability import PerRegistry

__all__ = ["ApiMetrics"]

_DURATIONS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics(PerRegistry):
    """One set per registry (:meth:`for_registry`). ``route`` is the route template
    (``/v1/tenants/{tenant}/projects/{project_id}``), never the raw path, so the number
    of series stays bounded; unmatched paths share ``<unmatched>``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "sidestream_api_requests",
            "Requests served, by method, route template and status code.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "sidestream_api_request_errors",
            "Requests answered with a 5xx status (server errors), by method and route.",
            ["method", "route"],
            registry=registry,
        )
        self.duration = Histogram(
            "sidestream_api_request_duration_seconds",
            "Time from request received to response sent, by method and route template.",
            ["method", "route"],
            registry=registry,
            buckets=_DURATIONS,
        )
        self.in_flight = Gauge(
            "sidestream_api_requests_in_flight", "Requests being served.", registry=registry
        )
        self.events_dropped = Counter(
            "sidestream_api_events_dropped",
            "Best-effort events (analytics) not published, by event type and reason.",
            ["event_type", "reason"],
            registry=registry,
        )
        self.write_invalidations = Counter(
            "sidestream_api_write_invalidations",
            "Direct invalidations after a committed write (best effort; the "
            "invalidation consumer is the guarantee), by outcome.",
            ["outcome"],
            registry=registry,
        )
