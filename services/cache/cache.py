"""``VersionedCache``: cache-aside over Redis for async services.

The read path of ``get_or_load(key, loader, ttl)``::

    L1 hit? ──yes──▶ return                         (no I/O)
      │ no
    same key already in flight in this process? ──yes──▶ await that flight
      │ no: start a flight
    GET <ns>:e:key ── value ──▶ XFetch says "recompute early"? and SET NX lock won?
      │                          ├─ yes: load, fill, return the new value
      │                          └─ no:  return the cached value
      │ missing or tombstone
    loop until waiter_max_wait_ms:
        SET <ns>:lock:e:key token NX PX lock_ttl_ms
          won  ─▶ GET again (someone may have filled since our GET) ─ hit ─▶ return
                  └─ miss ─▶ load, fill-if-newer (Lua), release (Lua compare-and-delete)
          lost ─▶ sleep 2, 4, 8 … 50 ms, GET ─ hit ─▶ return
    bound reached ─▶ load ourselves, fill-if-newer

    Redis unreachable anywhere above ─▶ call the loader (degraded read), keep the L1 going

In-process single flight makes the Redis lock a cross-process concern only: 1,000
concurrent misses in one process cost one GET, one SET NX and one loader call, and the
number of pollers of a key is at most one per process. An invalidation seen by this
process detaches the key's flight, so a read that starts after it never shares a load
that started before it.

What each bound protects: ``loader_timeout_ms`` caps a load, so a tombstone that outlives
it (``tombstone_ttl_ms``, checked) outlives every fill racing with an invalidation;
``lock_ttl_ms`` frees the lock of a crashed winner; ``waiter_max_wait_ms`` caps how long a
reader waits for another process; ``outage_backoff_ms`` skips Redis for a moment after a
failure, so an outage costs one timeout per window, not one per request. The loader call is
:mod:`services.cache.loading`, the lock :mod:`services.cache.fill_lock`, the outage window
:mod:`services.cache.outage`.

Why not a cache library: cashews (async, has early refresh and locks) and dogpile.cache
(lock-based regeneration, synchronous API) are not dependencies here, and neither carries
an entity version with each value, so neither can refuse a fill that an invalidation has
overtaken -- the property this module exists for. redis-py already gives us the lock
(:class:`redis.asyncio.lock.Lock`) and script registration; the rest is a few Lua lines.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random as _random
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from redis.asyncio import Redis

from services.cache.entry import Entry, NotFound, Versioned, decode_entry
from services.cache.errors import CacheUnavailableError
from services.cache.fill_lock import fill_lock, release_fill_lock
from services.cache.keys import Keys
from services.cache.loading import EntryLoader, ListLoader, Loader
from services.cache.local import L1
from services.cache.metrics import CacheMetrics
from services.cache.outage import OutageWindow
from services.cache.policy import should_recompute_early
from services.cache.scripts import Scripts
from services.cache.tombstones import REDIS_DOWN, Invalidator

logger = logging.getLogger(__name__)

# Waiters poll with exponential backoff: quick for fast loads, gentle for slow ones.
_FIRST_POLL = 0.002
_MAX_POLL = 0.05


class _Source(enum.Enum):
    """Where a flight got its entry (decides which counters each caller bumps)."""

    REDIS = "redis"  # a usable entry was in Redis
    RECOMPUTED = "recomputed"  # a usable entry was in Redis; XFetch refreshed it
    MISS = "miss"  # no usable entry: we (or another process) loaded it
    DEGRADED = "degraded"  # Redis unreachable: the loader answered


_Flight = asyncio.Future[tuple[Entry, _Source]]


class VersionedCache:
    """Cache-aside with versioned entries, stampede protection and an optional L1.

    All arguments are keyword-only; the defaults suit a local service.

    Args:
        redis: a pooled ``redis.asyncio.Redis`` with ``decode_responses=False`` and short
            socket timeouts (see :func:`~services.cache.cache_redis`). Not closed by us.
        namespace: prefix of every key and of the invalidation channel.
        registry: where the metrics go (tests pass a fresh one).
        l1: an in-process :class:`L1`. Run an :class:`L1Subscriber` for it: without one,
            invalidations made by other processes reach this L1 only through its TTL.
        ttl_jitter: each TTL is spread over ``ttl·(1 ± ttl_jitter)``.
        xfetch_beta: eagerness of early recomputation; 0 disables it.
        lock_ttl_ms: life of the fill lock (should exceed ``loader_timeout_ms``, or a
            second process may start loading while the first still is; harmless but
            wasteful).
        waiter_max_wait_ms: how long a reader waits for another process's fill before
            it loads itself.
        tombstone_ttl_ms: life of the tombstone an invalidation leaves; must exceed
            ``loader_timeout_ms`` (with margin for a fill's round trip).
        negative_ttl_ms: cap on the TTL of a "not found" entry.
        loader_timeout_ms: bound on one loader call.
        outage_backoff_ms: after Redis failed, go straight to the loader for this long.
        clock: wall-clock seconds; entries store absolute expiries shared by processes.
        random: uniform draws in [0, 1) for jitter and XFetch (injectable for tests).
    """

    def __init__(
        self,
        *,
        redis: Redis,
        namespace: str,
        registry: CollectorRegistry = REGISTRY,
        l1: L1 | None = None,
        ttl_jitter: float = 0.1,
        xfetch_beta: float = 1.0,
        lock_ttl_ms: int = 5_000,
        waiter_max_wait_ms: int = 2_000,
        tombstone_ttl_ms: int = 10_000,
        negative_ttl_ms: int = 5_000,
        loader_timeout_ms: int = 4_000,
        outage_backoff_ms: int = 500,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not 0 <= ttl_jitter < 1:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {ttl_jitter}")
        if xfetch_beta < 0:
            raise ValueError(f"xfetch_beta must be >= 0, got {xfetch_beta}")
        for name, value, low in (
            ("lock_ttl_ms", lock_ttl_ms, 1),
            ("waiter_max_wait_ms", waiter_max_wait_ms, 0),
            ("tombstone_ttl_ms", tombstone_ttl_ms, 1),
            ("negative_ttl_ms", negative_ttl_ms, 1),
            ("loader_timeout_ms", loader_timeout_ms, 1),
            ("outage_backoff_ms", outage_backoff_ms, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if tombstone_ttl_ms <= loader_timeout_ms:
            raise ValueError(
                f"tombstone_ttl_ms ({tombstone_ttl_ms}) must exceed loader_timeout_ms "
                f"({loader_timeout_ms}): a load that outlives the tombstone could put a "
                "value older than the invalidation back"
            )
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses: entries are binary")

        self.redis = redis
        self.keys = Keys(namespace)
        self.l1 = l1
        self._beta = xfetch_beta
        self._lock_ttl = lock_ttl_ms / 1000
        self._waiter_max_wait = waiter_max_wait_ms / 1000
        self._clock = clock
        self._random = random
        self._scripts = Scripts(redis)
        self._invalidator = Invalidator(
            redis=redis, keys=self.keys, scripts=self._scripts, tombstone_ttl_ms=tombstone_ttl_ms
        )
        self._outage = OutageWindow(namespace=namespace, outage_backoff_ms=outage_backoff_ms)
        self._inflight: dict[str, _Flight] = {}  # joinable flights, by entry name
        self._flights: set[_Flight] = set()  # every unfinished flight, joinable or not
        # False while the L1's eviction channel is down (set by L1Subscriber): the L1 is
        # neither read nor filled, since invalidations published meanwhile cannot reach it.
        self._l1_live = True

        metrics = CacheMetrics.for_registry(registry)
        ns = namespace
        self._metrics = metrics
        self._entry_loader = EntryLoader(
            namespace=namespace,
            metrics=metrics,
            ttl_jitter=ttl_jitter,
            negative_ttl_ms=negative_ttl_ms,
            loader_timeout_ms=loader_timeout_ms,
            clock=clock,
            random=random,
        )
        self._hit_l1 = metrics.hits.labels(ns, "l1")
        self._hit_redis = metrics.hits.labels(ns, "redis")
        self._misses = metrics.misses.labels(ns)
        self._lock_waits = metrics.lock_waits.labels(ns)
        self._lock_wait_timeouts = metrics.lock_wait_timeouts.labels(ns)
        self._early = metrics.early_recomputes.labels(ns)
        self._stale_refused = metrics.stale_fills_refused.labels(ns)
        self._degraded = metrics.degraded_reads.labels(ns)
        self._invalidations = metrics.invalidations.labels(ns)
        if l1 is not None:
            l1.set_eviction_listener(self._count_evictions)

    # --- reads -------------------------------------------------------------------------

    async def get_or_load(self, key: str, loader: Loader, ttl: float) -> Versioned | None:
        """The cached value of ``key``, loading (and caching) it on a miss.

        Args:
            key: the entity's cache key (any non-empty string).
            loader: reads the entity; returns :class:`Versioned`, or :class:`NotFound` /
                ``None`` when it does not exist (cached for at most ``negative_ttl_ms``).
                Concurrent callers of the same key in this process share one call of
                the first caller's loader.
            ttl: seconds to keep the value (jittered).

        Returns:
            The value and its version, or ``None`` when the entity does not exist.

        Raises:
            LoaderTimeoutError: the loader took longer than ``loader_timeout_ms``.
            Exception: whatever the loader raised (nothing is cached then).
            Never :class:`CacheUnavailableError`: without Redis the loader answers.
        """
        return await self._get(self.keys.entry(key), loader, ttl)

    async def get_or_load_list(
        self, tenant: str, collection: str, query: str, loader: ListLoader, ttl: float
    ) -> Any:
        """A cached list/query result, keyed by the collection's current generation.

        ``loader`` returns the result itself (any cacheable value). After
        :meth:`bump_generation` the next call uses a new key, so no list key is ever
        deleted or scanned for; old ones expire on their TTL. A list loaded before a bump
        and stored after it lands under the old generation's key, where no one looks.
        Costs one extra round trip (reading the generation).
        """
        generation: int | None = None
        if not self._outage.suspended():
            try:
                generation = await self._invalidator.generation(tenant, collection)
            except CacheUnavailableError as exc:
                self._outage.note("generation", exc)
        version = generation if generation is not None else 0

        async def load() -> Versioned:
            return Versioned(await loader(), version)

        if generation is None:
            # Without the generation there is no key to look up: read through.
            self._degraded.inc()
            entry, _ = await self._entry_loader.load(f"{tenant}/{collection}/{query}", load, ttl)
            result = entry.result()
        else:
            name = self.keys.list_entry(tenant, collection, generation, query)
            result = await self._get(name, load, ttl)
        return None if result is None else result.value

    def peek_local(self, key: str) -> Versioned | NotFound | None:
        """What this process's L1 holds for ``key`` (``None``: nothing); no I/O, no load."""
        if self.l1 is None:
            return None
        entry = self.l1.get(self.keys.entry(key))
        if entry is None:
            return None
        result = entry.result()
        return NotFound(entry.version) if result is None else result

    async def _get(self, name: str, loader: Loader, ttl: float) -> Versioned | None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        if self.l1 is not None and self._l1_live:
            held = self.l1.get(name)
            if held is not None:
                self._hit_l1.inc()
                return held.result()
        flight = self._inflight.get(name)
        if flight is None:
            flight = asyncio.ensure_future(self._resolve(name, loader, ttl))
            self._inflight[name] = flight
            self._flights.add(flight)
            flight.add_done_callback(partial(self._landed, name))
        # shield: a caller that is cancelled leaves the flight running for the others.
        entry, source = await asyncio.shield(flight)
        if source is _Source.REDIS or source is _Source.RECOMPUTED:
            self._hit_redis.inc()
        elif source is _Source.MISS:
            self._misses.inc()
        else:
            self._degraded.inc()
        return entry.result()

    def _landed(self, name: str, flight: _Flight) -> None:
        self._flights.discard(flight)
        if self._inflight.get(name) is flight:
            del self._inflight[name]
        if not flight.cancelled():
            # Mark the exception retrieved: every caller may have been cancelled, and
            # asyncio would then log "exception was never retrieved" for a loader error
            # the callers already stopped waiting for.
            flight.exception()

    async def _resolve(self, name: str, loader: Loader, ttl: float) -> tuple[Entry, _Source]:
        # Read the epoch before Redis: a flush in between makes our L1 put a no-op.
        epoch = self.l1.epoch if self.l1 is not None else 0
        if self._outage.suspended():
            return await self._load_degraded(name, loader, ttl, epoch)
        try:
            entry = decode_entry(await self.redis.get(name))
        except REDIS_DOWN as exc:
            self._outage.note("get", exc)
            return await self._load_degraded(name, loader, ttl, epoch)
        if entry is not None and not entry.is_tombstone:
            now_ms = self._now_ms()
            if should_recompute_early(
                now_ms=now_ms,
                delta_ms=entry.delta_ms,
                expiry_ms=entry.expiry_ms,
                beta=self._beta,
                draw=self._random(),
            ):
                refreshed = await self._recompute_early(name, entry, loader, ttl, epoch)
                if refreshed is not None:
                    return refreshed, _Source.RECOMPUTED
            self._l1_put(name, entry, epoch)
            return entry, _Source.REDIS
        if entry is not None and self.l1 is not None:
            # A tombstone: even if this process missed the message, its L1 must not
            # serve anything older.
            self.l1.invalidate(name, entry.version)
        return await self._fill(name, loader, ttl, epoch)

    async def _fill(
        self, name: str, loader: Loader, ttl: float, epoch: int
    ) -> tuple[Entry, _Source]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._waiter_max_wait
        pause = _FIRST_POLL
        waited = False
        while True:
            lock = fill_lock(self.redis, self.keys.lock(name), self._lock_ttl)
            try:
                acquired = await lock.acquire(blocking=False)
            except REDIS_DOWN as exc:
                self._outage.note("lock", exc)
                return await self._load_degraded(name, loader, ttl, epoch)
            if acquired:
                try:
                    # Double-check: another process may have filled and released between
                    # our GET and our SET NX.
                    try:
                        entry = decode_entry(await self.redis.get(name))
                    except REDIS_DOWN as exc:
                        self._outage.note("get", exc)
                        return await self._load_degraded(name, loader, ttl, epoch)
                    if entry is not None and not entry.is_tombstone:
                        self._l1_put(name, entry, epoch)
                        return entry, _Source.MISS
                    return await self._load_and_store(name, loader, ttl, epoch)
                finally:
                    await release_fill_lock(lock)
            if not waited:
                waited = True
                self._lock_waits.inc()
            remaining = deadline - loop.time()
            if remaining <= 0:
                self._lock_wait_timeouts.inc()
                logger.info(
                    "cache %s: waited %.0f ms for another fill; loading ourselves",
                    name,
                    self._waiter_max_wait * 1000,
                )
                return await self._load_and_store(name, loader, ttl, epoch)
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_POLL)
            try:
                entry = decode_entry(await self.redis.get(name))
            except REDIS_DOWN as exc:
                self._outage.note("get", exc)
                return await self._load_degraded(name, loader, ttl, epoch)
            if entry is not None and not entry.is_tombstone:
                self._l1_put(name, entry, epoch)
                return entry, _Source.MISS

    async def _recompute_early(
        self, name: str, current: Entry, loader: Loader, ttl: float, epoch: int
    ) -> Entry | None:
        """XFetch's refresh; ``None`` means "keep serving ``current``"."""
        lock = fill_lock(self.redis, self.keys.lock(name), self._lock_ttl)
        try:
            if not await lock.acquire(blocking=False):
                return None  # another reader is recomputing; the current value is fine
        except REDIS_DOWN as exc:
            self._outage.note("lock", exc)
            return None
        try:
            try:
                latest = decode_entry(await self.redis.get(name))
            except REDIS_DOWN as exc:
                self._outage.note("get", exc)
                return None
            invalidated = latest is None or latest.is_tombstone
            if latest is not None and not invalidated and latest != current:
                return latest  # refreshed by someone else between our GET and the lock
            self._early.inc()
            try:
                entry, _ = await self._load_and_store(name, loader, ttl, epoch)
            except Exception:
                if invalidated:
                    raise
                # The current value is still valid until its expiry: serve it rather
                # than fail the read; the error is counted and logged here.
                logger.warning("cache %s: early recompute failed", name, exc_info=True)
                return None
            return entry
        finally:
            await release_fill_lock(lock)

    async def _load_and_store(
        self, name: str, loader: Loader, ttl: float, epoch: int
    ) -> tuple[Entry, _Source]:
        entry, ttl_ms = await self._entry_loader.load(name, loader, ttl)
        try:
            stored = await self._scripts.fill(name, entry.encode(), ttl_ms)
        except REDIS_DOWN as exc:
            self._outage.note("fill", exc)
            self._l1_put(name, entry, epoch)
            return entry, _Source.DEGRADED
        if stored:
            self._l1_put(name, entry, epoch)
        else:
            # Redis holds a newer version or a tombstone: our value was read before a
            # write. The caller still gets it (it was true when read); nobody else will.
            self._stale_refused.inc()
            logger.info("cache %s: refused stale fill at version %d", name, entry.version)
        return entry, _Source.MISS

    async def _load_degraded(
        self, name: str, loader: Loader, ttl: float, epoch: int
    ) -> tuple[Entry, _Source]:
        entry, _ = await self._entry_loader.load(name, loader, ttl)
        self._l1_put(name, entry, epoch)
        return entry, _Source.DEGRADED

    # --- writes ------------------------------------------------------------------------

    async def invalidate(self, key: str, new_version: int) -> bool:
        """Replace ``key``'s entry by a tombstone at ``new_version`` and tell every L1.

        Atomic on the server: unless Redis already holds ``new_version`` or newer, the
        entry becomes a tombstone for ``tombstone_ttl_ms``, which refuses any fill older
        than ``new_version``; the key is published on ``<namespace>:invalidations`` in
        the same step. Replays and out-of-order calls are harmless.

        Returns:
            ``True`` when the tombstone was written (``False``: Redis already had it).

        Raises:
            CacheUnavailableError: Redis is unreachable (retry; do not commit the event).
        """
        self.evict_local(key, new_version)
        written = await self._invalidator.invalidate(key, new_version, self._now_ms())
        self._invalidations.inc()
        return written

    async def invalidate_many(self, items: Iterable[tuple[str, int]]) -> list[bool]:
        """:meth:`invalidate` for ``(key, new_version)`` pairs, pipelined in chunks.

        Returns one flag per item, in order. Raises :class:`CacheUnavailableError` if
        Redis fails part-way (the earlier chunks are written; replaying all is safe).
        """
        batch = list(items)
        for key, version in batch:
            self.evict_local(key, version)
        written = await self._invalidator.invalidate_many(batch, self._now_ms())
        self._invalidations.inc(len(batch))
        return written

    async def generation(self, tenant: str, collection: str) -> int:
        """The current generation of ``tenant``'s ``collection`` (created on first use).

        Raises:
            CacheUnavailableError: Redis is unreachable.
        """
        return await self._invalidator.generation(tenant, collection)

    async def bump_generation(self, tenant: str, collection: str) -> int:
        """Invalidate every cached list of ``tenant``'s ``collection``; the new generation.

        Raises:
            CacheUnavailableError: Redis is unreachable (retry; do not commit the event).
        """
        return await self._invalidator.bump_generation(tenant, collection)

    async def aclose(self) -> None:
        """Cancel in-flight loads (the Redis client is the caller's to close)."""
        flights = list(self._flights)
        for flight in flights:
            flight.cancel()
        await asyncio.gather(*flights, return_exceptions=True)

    # --- helpers -----------------------------------------------------------------------

    def _l1_put(self, name: str, entry: Entry, epoch: int) -> None:
        if self.l1 is not None and self._l1_live:
            remaining = (entry.expiry_ms - self._now_ms()) / 1000
            self.l1.put(name, entry, epoch=epoch, ttl=remaining)

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)

    def _count_evictions(self, reason: str, count: int) -> None:
        self._metrics.l1_evictions.labels(self.keys.namespace, reason).inc(count)

    # --- local eviction (the L1Subscriber's contract, services.cache.l1_subscriber) -------

    def evict_local(self, key: str, version: int) -> None:
        """Drop ``key`` from this process's L1 if it holds a version older than ``version``."""
        name = self.keys.entry(key)
        # A flight that started before the invalidation may carry the old value: let it
        # finish for the callers it has, but make later callers start a new one.
        self._inflight.pop(name, None)
        if self.l1 is not None:
            self.l1.invalidate(name, version)

    def flush_local(self, reason: str) -> None:
        """Drop every L1 entry (``reason`` labels the eviction metric)."""
        self._inflight.clear()  # as in evict_local, for every key
        if self.l1 is not None:
            self.l1.flush(reason)

    def resume_local(self) -> None:
        """Resubscribed: flush what may have been missed, then serve the L1 again."""
        # Messages published while the subscription was down are lost: forget everything,
        # then serve the L1 again.
        self.flush_local("resubscribe")
        self._l1_live = True

    def suspend_local(self, reason: str) -> None:
        """The eviction channel is down: stop serving and filling the L1, and flush it."""
        # From now on invalidations cannot reach this L1: stop serving and filling it at
        # once (not after its TTL); reads go to Redis or the loader until resubscribed.
        # The flush moves the epoch, so a read already in flight cannot fill it either.
        self._l1_live = False
        self.flush_local(reason)

    @property
    def l1_live(self) -> bool:
        """Whether the L1 is in use (``False`` while its eviction channel is down)."""
        return self.l1 is not None and self._l1_live
