"""The invalidation consumer: ``EntityChanged`` events → cache tombstones, list
generation bumps and L1 evictions, run by the consumers' batch runtime.

Flow of one batch (``sidestream worker run invalidation``)::

    EntityChanged records (keyed by entity, so one entity's changes stay in order)
      │  fold: highest version per item key; the set of (tenant, collection) touched
      ▼
    on the cache's event-loop thread, bounded by ``timeout_s``:
      bump_generation(tenant, collection)      every cached list of it becomes unreachable
      invalidate_many([(item key, version)])   Lua per key, pipelined: tombstone unless
                                               Redis already holds that version or newer,
                                               and PUBLISH it for every process's L1
      ▼
    the runtime stores the offsets in Postgres and commits

Offsets commit only after Redis took the batch: a Redis failure raises
:class:`~services.errors.InvalidationUnavailableError` (a ``ConnectionError``) or
:class:`~services.errors.InvalidationTimeoutError` (a ``TimeoutError``), which the runtime
treats as transient — it pauses, backs off and retries the same batch, never skips it.
Replays are harmless: an invalidation never lowers a version.

Readiness follows Redis as well as Kafka and Postgres: a :class:`RedisWatch` pings it
every second — also while no event arrives, when nothing else would notice it is away —
and hears how each batch went. Past ``SIDESTREAM_CONSUMER_RETRY_DEADLINE_S`` of failures
``/readyz`` says 503 until Redis answers again; the outage is logged as one line naming
Redis and the fix, repeated at most once a minute with a count.

The sink writes no rows; ``write`` returns the number of tombstones written (keys whose
entry was older than the event), which the runtime counts as its "rows".

L1 evictions happen in the processes that hold an L1 (their
:class:`~services.cache.L1Subscriber` receives what this consumer publishes); each counts
them in ``sidestream_cache_l1_evictions_total``. This process counts what it published.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from consumers import BatchConfig, ExitStatus, Record, WorkerOptions, run_worker
from runtime import Settings
from runtime.observability import PerRegistry
from runtime.outages import LineLimiter, fix_hint
from schemas import EntityChanged
from services._loop import EventLoopThread
from services.cache import CacheUnavailableError, VersionedCache, cache_redis
from services.entities import collection_of, item_key
from services.errors import InvalidationTimeoutError, InvalidationUnavailableError

__all__ = ["InvalidationMetrics", "InvalidationSink", "RedisWatch", "run_invalidation_worker"]

logger = logging.getLogger(__name__)

#: The worker name: ``sidestream worker run invalidation``, the consumer group suffix.
SINK_NAME = "invalidation"

_LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class InvalidationMetrics(PerRegistry):
    """The consumer's metrics, one set per registry (:meth:`for_registry`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Histogram(
            "sidestream_invalidation_lag_seconds",
            "From an EntityChanged event's occurred_at to its keys being tombstoned.",
            ["cache"],
            registry=registry,
            buckets=_LAG_BUCKETS,
        )
        self.keys = Counter(
            "sidestream_invalidation_keys",
            "Item keys invalidated, by outcome: tombstoned (the entry was older) or "
            "current (Redis already held that version or newer).",
            ["cache", "outcome"],
            registry=registry,
        )
        self.published = Counter(
            "sidestream_invalidation_published",
            "Invalidations published on the pub/sub channel (each evicts the key from "
            "every subscribed L1 that holds an older version).",
            ["cache"],
            registry=registry,
        )
        self.generation_bumps = Counter(
            "sidestream_invalidation_generation_bumps",
            "List generations bumped (once per tenant collection per batch).",
            ["cache"],
            registry=registry,
        )
        self.skipped = Counter(
            "sidestream_invalidation_skipped_events",
            "Events that name no cacheable key (invalid tenant/type/id), by reason.",
            ["cache", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "sidestream_invalidation_failures",
            "Batches whose invalidation failed and will be retried, by reason.",
            ["cache", "reason"],
            registry=registry,
        )


def _reason(exc: BaseException) -> str:
    """Why Redis failed, in a few words ("connection refused", "timed out", …)."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, TimeoutError):
            return "no answer in time"
        current = current.__cause__ or current.__context__
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:1].lower() + text[1:].rstrip(".")


class RedisWatch:
    """Whether the cache's Redis answers, for readiness.

    A daemon thread pings Redis (on the cache's event loop) every ``interval_s``; the sink
    reports each batch (:meth:`answered`, :meth:`failed`). Not ready once Redis has been
    failing for longer than ``retry_deadline_s`` (the deadline every worker uses), ready
    again as soon as it answers. The first failure of an outage is logged as one line
    with the fix; repeats within a minute are only counted.
    """

    def __init__(
        self,
        *,
        cache: VersionedCache,
        loop: EventLoopThread,
        address: str,
        profile: Literal["local", "production"] = "local",
        retry_deadline_s: float = 30.0,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cache = cache
        self._loop = loop
        self._address = address
        self._hint = fix_hint(profile, "SIDESTREAM_REDIS_URL")
        self._retry_deadline_s = retry_deadline_s
        self._interval_s = interval_s
        self._clock = clock
        self._lines = LineLimiter(interval_s=60.0, clock=clock)
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Ping every ``interval_s`` on a daemon thread until :meth:`close`."""
        self._thread = threading.Thread(target=self._watch, name="redis-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def ready(self) -> bool:
        with self._lock:
            since = self._failing_since
        return since is None or self._clock() - since <= self._retry_deadline_s

    def answered(self) -> None:
        """Redis took a command: the outage (if any) is over."""
        with self._lock:
            was_failing, self._failing_since = self._failing_since is not None, None
        if was_failing:
            logger.info("Redis at %s reachable again", self._address)

    def failed(self, exc: BaseException) -> None:
        """Redis failed a command (it is retried): log the outage once, note since when."""
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
        reason = _reason(exc)
        suffix = self._lines.admit(("redis", reason))
        if suffix is not None:
            logger.warning(
                "cannot reach Redis at %s (%s); retrying — %s%s",
                self._address,
                reason,
                self._hint,
                suffix,
            )

    async def _ping(self) -> None:
        await self._cache.redis.ping()

    def _watch(self) -> None:
        while not self._closed.wait(self._interval_s):
            try:
                # The client's own timeouts (a quarter second) bound the ping.
                self._loop.run(self._ping(), timeout=max(1.0, self._interval_s))
            except Exception as exc:
                if self._closed.is_set():
                    return
                self.failed(exc)
            else:
                self.answered()


class InvalidationSink:
    """A :class:`consumers.Sink` that invalidates cache keys instead of writing rows.

    Args:
        cache: the cache to invalidate; it (and its Redis client) must belong to
            ``loop``'s event loop.
        loop: the thread running the cache's event loop.
        registry: where the metrics go.
        timeout_s: bound on one batch's Redis work; past it the batch fails (transient)
            and is retried.
        clock: wall-clock seconds, compared with the events' ``occurred_at``.
        watch: told how each batch's Redis work went (readiness, the outage line).
    """

    def __init__(
        self,
        *,
        cache: VersionedCache,
        loop: EventLoopThread,
        registry: CollectorRegistry = REGISTRY,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        watch: RedisWatch | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s}")
        self._cache = cache
        self._loop = loop
        self._timeout_s = timeout_s
        self._clock = clock
        self._watch = watch
        ns = cache.keys.namespace
        metrics = InvalidationMetrics.for_registry(registry)
        self._lag = metrics.lag.labels(ns)
        self._tombstoned = metrics.keys.labels(ns, "tombstoned")
        self._current = metrics.keys.labels(ns, "current")
        self._published = metrics.published.labels(ns)
        self._bumps = metrics.generation_bumps.labels(ns)
        self._skipped = metrics.skipped
        self._failures = metrics.failures
        self._ns = ns

    @property
    def name(self) -> str:
        return SINK_NAME

    @property
    def event_type(self) -> type[EntityChanged]:
        return EntityChanged

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        """Invalidate every key the batch's events affect; the tombstones written.

        ``tx`` is unused: the offsets the runtime stores in it commit only if this
        returns, i.e. only once Redis has taken every invalidation.

        Raises:
            InvalidationUnavailableError: Redis unreachable (the batch is retried).
            InvalidationTimeoutError: Redis too slow (the batch is retried).
        """
        latest: dict[str, int] = {}
        collections: set[tuple[str, str]] = set()
        for record in records:
            event: EntityChanged = record.event
            try:
                key = item_key(event.tenant_id, event.entity_type, event.entity_id)
                collection = collection_of(event.entity_type)
            except ValueError as exc:
                # No reader could have cached this entity under a name we cannot build
                # (the API builds its keys with the same functions): nothing to do.
                self._skipped.labels(self._ns, "invalid_key").inc()
                logger.warning(
                    "event %s at %s names no cacheable key: %s",
                    event.event_id,
                    record.raw.position,
                    exc,
                )
                continue
            latest[key] = max(latest.get(key, 0), event.version)
            collections.add((event.tenant_id, collection))
        if not latest:
            return 0
        items = sorted(latest.items())
        try:
            written = self._loop.run(self._apply(items, sorted(collections)), self._timeout_s)
        except CacheUnavailableError as exc:
            self._failures.labels(self._ns, "unavailable").inc()
            if self._watch is not None:
                self._watch.failed(exc)
            raise InvalidationUnavailableError(
                f"cannot invalidate {len(items)} keys: {exc}",
                keys=len(items),
                operation=exc.operation,
            ) from exc
        except TimeoutError as exc:
            self._failures.labels(self._ns, "timeout").inc()
            if self._watch is not None:
                self._watch.failed(exc)
            raise InvalidationTimeoutError(
                f"invalidating {len(items)} keys took longer than {self._timeout_s:.1f}s",
                keys=len(items),
                timeout_s=self._timeout_s,
            ) from exc
        if self._watch is not None:
            self._watch.answered()
        now = self._clock()
        for record in records:
            self._lag.observe(max(0.0, now - record.event.occurred_at.timestamp()))
        tombstoned = sum(written)
        self._tombstoned.inc(tombstoned)
        self._current.inc(len(written) - tombstoned)
        self._published.inc(len(written))
        self._bumps.inc(len(collections))
        logger.debug(
            "invalidated %d keys (%d tombstones) and %d collections up to %s",
            len(items),
            tombstoned,
            len(collections),
            records[-1].raw.position,
        )
        return tombstoned

    async def _apply(
        self, items: list[tuple[str, int]], collections: list[tuple[str, str]]
    ) -> list[bool]:
        for tenant, collection in collections:
            await self._cache.bump_generation(tenant, collection)
        return await self._cache.invalidate_many(items)


def run_invalidation_worker(
    settings: Settings,
    *,
    stop: threading.Event,
    registry: CollectorRegistry = REGISTRY,
    group_id: str | None = None,
    topics: Sequence[str] | None = None,
    schema: str | None = None,
    namespace: str = "sidestream",
    batch_max_wait_ms: int | None = 20,
    timeout_s: float = 10.0,
    tombstone_ttl_ms: int = 10_000,
    install_signal_handlers: bool = False,
) -> ExitStatus:
    """Run the invalidation consumer until ``stop`` is set (``sidestream worker run
    invalidation``); returns how it drained.

    Args:
        settings: Kafka, Postgres (offsets live in ``consumer_offsets`` of ``schema``) and
            Redis.
        stop: set it to drain and return (the CLI sets it on SIGTERM/SIGINT).
        registry: metrics (the runtime's, the cache's and this consumer's).
        group_id: consumer group (default ``sidestream.sink.invalidation``).
        topics: default: the topic of ``EntityChanged`` in ``schemas/topics.yaml``.
        schema: Postgres schema of ``consumer_offsets`` (default: the configured one).
        namespace: the cache namespace, the same as the API's.
        batch_max_wait_ms: how long a batch stays open after its first record; ``None``
            keeps ``settings.consumer_batch_max_wait_ms``. Small by default (20 ms, vs
            the sinks' 200 ms): here batching buys little and every millisecond is part
            of the stale window.
        timeout_s: bound on one batch's Redis work (then the batch is retried).
        tombstone_ttl_ms: life of a tombstone; must exceed the readers'
            ``loader_timeout_ms`` (4 s by default).
        install_signal_handlers: let the worker install its own SIGTERM/SIGINT handlers
            (only from the main thread, when the caller does not own signals).
    """
    config = BatchConfig.from_settings(settings)
    if batch_max_wait_ms is not None:
        config = dataclasses.replace(config, max_wait_s=batch_max_wait_ms / 1000)
    loop = EventLoopThread("invalidation-cache")

    async def build() -> VersionedCache:
        return VersionedCache(
            redis=cache_redis(settings, client_name="sidestream-invalidation"),
            namespace=namespace,
            registry=registry,
            tombstone_ttl_ms=tombstone_ttl_ms,
        )

    try:
        cache = loop.run(build(), timeout=10)
        redis_url = urlsplit(settings.redis_url.get_secret_value())
        watch = RedisWatch(
            cache=cache,
            loop=loop,
            address=f"{redis_url.hostname or 'localhost'}:{redis_url.port or 6379}",
            profile=settings.profile,
            retry_deadline_s=settings.consumer_retry_deadline_s,
        )
        sink = InvalidationSink(
            cache=cache, loop=loop, registry=registry, timeout_s=timeout_s, watch=watch
        )
        options = WorkerOptions(
            sink=SINK_NAME,
            group_id=group_id,
            topics=tuple(topics) if topics else None,
            schema=schema,
        )
        watch.start()
        try:
            return run_worker(
                settings,
                options,
                stop=stop,
                registry=registry,
                install_signal_handlers=install_signal_handlers,
                sink=sink,
                config=config,
                ready=watch.ready,
            )
        finally:
            watch.close()

            async def close() -> None:
                await cache.aclose()
                await cache.redis.aclose()

            try:
                loop.run(close(), timeout=5)
            except Exception:
                logger.warning("closing the invalidation cache failed", exc_info=True)
    finally:
        loop.close()
