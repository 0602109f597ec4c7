"""What an API instance is configured with, beyond :class:`runtime.Settings`.

Everything a test needs to isolate an instance (Postgres schema, topics, cache namespace,
limits) is here, so two instances can run side by side in one process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime import Settings
from schemas import Event
from schemas.topics import topic_for
from services.ratelimit import RateLimit

__all__ = ["ApiConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """Settings of one API instance; durations in seconds unless the name says ms.

    Attributes:
        schema: Postgres schema of ``projects`` and ``outbox`` (default: the settings').
        cache_namespace: prefix of every Redis key and of the invalidation channel; the
            invalidation consumer must use the same.
        topics: topic per event subject, overriding ``schemas/topics.yaml`` (tests).
        read_dsn: a read replica for cache loads and lists; default: the primary. A
            replica lagging by more than the tombstone TTL (10 s) could refill a stale
            value after an invalidation; keep replica lag alerts below that.
        item_ttl_s / list_ttl_s: cache TTLs of one project / one list page.
        l1_ttl_s: in-process L1 TTL (``None``: no L1). It bounds staleness only when an
            invalidation message is lost (e.g. while Redis is down).
        l1_max_entries: L1 size bound.
        rate_limit: per authenticated principal and the scope a route needs:
            ``"per-scope"`` takes the limits of ``SIDESTREAM_API_RATE_LIMITS`` over
            ``SIDESTREAM_API_RATE_LIMIT_WINDOW_S``; a :class:`RateLimit` applies to every
            scope (tests, benchmarks); ``None`` disables limiting.
        producer: the service name in events and metrics.
        publisher_max_queue: local Kafka queue bound; when full, requests that must
            publish get 503 with ``Retry-After``.
        publisher_config: extra librdkafka properties of the publisher.
        shutdown_flush_s: how long shutdown waits for queued events to reach Kafka.
        invalidate_on_write: after a write commits, also invalidate the entity's keys
            directly (best effort). The invalidation consumer remains the guarantee;
            this gives the writer read-your-writes and shrinks the stale window.
        view_events: publish an ``AnalyticsEvent`` ("project_viewed") per item read.
        access_log: log one JSON line per request.
        statement_timeout_ms: Postgres statement timeout of the API's connections (below
            the cache's 4 s loader timeout, so a slow query fails as a query).
        pool_timeout_s: how long a request waits for a pooled connection (then 503).
        max_page_size: largest ``limit`` of the list endpoint.
    """

    schema: str | None = None
    cache_namespace: str = "sidestream"
    topics: Mapping[str, str] = field(default_factory=dict)
    read_dsn: str | None = None
    item_ttl_s: float = 300.0
    list_ttl_s: float = 60.0
    l1_ttl_s: float | None = 2.0
    l1_max_entries: int = 10_000
    rate_limit: RateLimit | Literal["per-scope"] | None = "per-scope"
    producer: str = "sidestream-api"
    publisher_max_queue: int = 100_000
    publisher_config: Mapping[str, Any] = field(default_factory=dict)
    shutdown_flush_s: float = 5.0
    invalidate_on_write: bool = True
    view_events: bool = True
    access_log: bool = True
    statement_timeout_ms: int = 3000
    pool_timeout_s: float = 5.0
    max_page_size: int = 200

    def __post_init__(self) -> None:
        for name in ("item_ttl_s", "list_ttl_s", "shutdown_flush_s", "pool_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.l1_ttl_s is not None and not self.l1_ttl_s > 0:
            raise ValueError(f"l1_ttl_s must be > 0 or None, got {self.l1_ttl_s}")
        for name in ("l1_max_entries", "publisher_max_queue", "statement_timeout_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.max_page_size <= 1000:
            raise ValueError(f"max_page_size must be in [1, 1000], got {self.max_page_size}")
        if not self.producer:
            raise ValueError("producer must not be empty")

    def rate_limits(self, settings: Settings) -> dict[str, RateLimit] | None:
        """The limit per scope name (``None``: no limiting)."""
        if self.rate_limit is None:
            return None
        if isinstance(self.rate_limit, RateLimit):
            return dict.fromkeys(settings.api_rate_limits, self.rate_limit)
        window = settings.api_rate_limit_window_s
        return {
            scope: RateLimit(limit, window) for scope, limit in settings.api_rate_limits.items()
        }

    def schema_for(self, settings: Settings) -> str:
        """The Postgres schema in use."""
        return self.schema or settings.postgres_schema

    def topic(self, event_type: type[Event]) -> str:
        """The topic ``event_type`` goes to."""
        return self.topics.get(event_type.SUBJECT) or topic_for(event_type)
