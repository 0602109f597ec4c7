"""Scenario ``redis-restart``: stop and start Redis during mixed cache traffic.

The traffic, all in one event loop::

    writer   EntityChanged from SyntheticEvents ─▶ UPDATE the entity's row (version + 1)
             ─▶ cache.invalidate(key, version); while Redis is down the invalidation
             fails and is kept, then retried until it lands (as the invalidation consumer
             would: never skip one)
    readers  get_or_load(key) through ``caches`` VersionedCaches, each with an L1 and an
             L1Subscriber (as separate API processes would have), loading the row
    outages  Redis stopped (SIGTERM; it keeps nothing on disk) for a random while, then
             started again, at random points of the traffic

Passes if no read failed (the cache reads through the loader while Redis is down), and
after quiescence — traffic stopped, every kept invalidation landed, the subscribers back
— no cache entry, in Redis or in any L1, holds an older version than the database.

Reported as: events in = writes, rows out = reads served, stale = stale entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size
from devtools.chaos.stack import PrivateStack
from producers.synthetic import SyntheticEvents
from runtime import Settings, new_registry
from runtime.clients import postgres_connect
from schemas import EntityChanged
from services.cache import (
    L1,
    CacheUnavailableError,
    L1Subscriber,
    NotFound,
    Versioned,
    VersionedCache,
    cache_redis,
)
from services.cache.entry import decode_entry
from services.cache.keys import Keys
from services.entities import item_key

NAME = "redis-restart"
NAMESPACE = "chaos"
TABLE = "chaos_entities"
_ENTITY_MIX = (0.0, 0.0, 0.0, 1.0)  # SyntheticEvents: EntityChanged only

Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    traffic_s: float
    """How long the mixed traffic runs."""
    write_rate: float
    """Entity writes per second."""
    read_rate: float
    """Reads per second, over all readers."""
    readers: int = 16
    caches: int = 2
    """Reader caches: each stands for one API process (own Redis client, L1, subscriber)."""
    outages: int
    down_s: tuple[float, float]
    tenants: int = 5
    ttl_s: float = 60.0
    l1_ttl_s: float = 30.0
    """Long on purpose: an L1 entry a lost invalidation left behind would still be there
    when the stale entries are counted."""
    budget_s: float


SIZES: dict[Size, Params] = {
    "tiny": Params(
        traffic_s=6, write_rate=100, read_rate=1_000, outages=1, down_s=(1, 2), budget_s=120
    ),
    "quick": Params(
        traffic_s=20, write_rate=200, read_rate=2_000, outages=2, down_s=(1, 3), budget_s=180
    ),
    "full": Params(
        traffic_s=120, write_rate=300, read_rate=3_000, outages=6, down_s=(1, 8), budget_s=600
    ),
}


@dataclass(slots=True)
class _Tally:
    writes: int = 0
    reads: int = 0
    failed_reads: int = 0
    empty_reads: int = 0
    failed_invalidations: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.first_errors) < 3:
            self.first_errors.append(text)


class _Traffic:
    """The writer, the readers and what they share (pool, caches, known keys)."""

    def __init__(self, run: ScenarioRun, stack: PrivateStack, params: Params, seed: int) -> None:
        self.run = run
        self.stack = stack
        self.params = params
        self.rng = random.Random(seed)
        self.events = SyntheticEvents(
            seed=seed, tenants=params.tenants, mix=_ENTITY_MIX, producer="sidestream-chaos"
        )
        self.tally = _Tally()
        self.keys: list[str] = []
        self.known: set[str] = set()
        self.pending: dict[str, int] = {}  # invalidations that failed: key → version
        self.stopping = asyncio.Event()
        self.pool: Pool = AsyncConnectionPool(
            stack.settings.postgres_dsn.get_secret_value(),
            min_size=2,
            max_size=8,
            kwargs={"autocommit": True},
            timeout=10,
            open=False,
        )
        self.clients: list[Redis] = []
        self.registries: list[CollectorRegistry] = []
        self.writer_cache = self._cache(stack.settings, l1=None)
        self.caches = [
            self._cache(stack.settings, l1=L1(max_entries=100_000, ttl=params.l1_ttl_s))
            for _ in range(params.caches)
        ]
        self.subscribers = [L1Subscriber(cache, max_backoff=0.5) for cache in self.caches]

    def _cache(self, settings: Settings, *, l1: L1 | None) -> VersionedCache:
        client, registry = cache_redis(settings), new_registry()
        self.clients.append(client)
        self.registries.append(registry)
        return VersionedCache(redis=client, namespace=NAMESPACE, registry=registry, l1=l1)

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=15)
        for subscriber in self.subscribers:
            await subscriber.start()
            await subscriber.wait_subscribed(5)

    async def close(self) -> None:
        for subscriber in self.subscribers:
            await subscriber.stop()
        for cache in (self.writer_cache, *self.caches):
            await cache.aclose()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()
        await self.pool.close()

    # --- the database -------------------------------------------------------------------
    def loader(self, key: str) -> Callable[[], Awaitable[Versioned | NotFound | None]]:
        async def load() -> Versioned | NotFound | None:
            async with self.pool.connection() as conn:
                cursor = await conn.execute(
                    f"SELECT version, body FROM {TABLE} WHERE key = %s", (key,)
                )
                row = await cursor.fetchone()
            return None if row is None else Versioned(row[1], int(row[0]))

        return load

    async def write(self, event: EntityChanged) -> None:
        key = item_key(event.tenant_id, event.entity_type, event.entity_id)
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                f"""INSERT INTO {TABLE} (key, version, body) VALUES (%s, 1, %s)
                    ON CONFLICT (key) DO UPDATE
                    SET version = {TABLE}.version + 1, body = EXCLUDED.body
                    RETURNING version""",
                (key, f"{event.event_id} {event.change_kind.value}"),
            )
            row = await cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING returns the row
        version = int(row[0])
        self.tally.writes += 1
        if key not in self.known:
            self.known.add(key)
            self.keys.append(key)
        try:
            await self.writer_cache.invalidate(key, version)
        except CacheUnavailableError:
            self.tally.failed_invalidations += 1
            self.pending[key] = max(version, self.pending.get(key, 0))

    async def retry_pending(self) -> bool:
        """Try the kept invalidations again; ``True`` when none is left."""
        if not self.pending:
            return True
        items = sorted(self.pending.items())
        try:
            await self.writer_cache.invalidate_many(items)
        except CacheUnavailableError:
            return False
        for key, version in items:
            if self.pending.get(key) == version:
                del self.pending[key]
        return not self.pending

    # --- the loops ----------------------------------------------------------------------
    async def writer(self) -> None:
        interval = 1 / self.params.write_rate
        next_retry = 0.0
        while not self.stopping.is_set():
            started = time.monotonic()
            event = self.events.next("entity")
            assert isinstance(event, EntityChanged)
            await self.write(event)
            if self.pending and started >= next_retry and not await self.retry_pending():
                next_retry = started + 0.2
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def reader(self, number: int) -> None:
        cache = self.caches[number % len(self.caches)]
        rng = random.Random(self.rng.random())
        interval = self.params.readers / self.params.read_rate
        while not self.stopping.is_set():
            started = time.monotonic()
            if self.keys:
                key = self.keys[int(len(self.keys) * rng.random() ** 2)]  # skewed: hot keys
                try:
                    found = await cache.get_or_load(key, self.loader(key), self.params.ttl_s)
                except Exception as exc:
                    self.tally.failed_reads += 1
                    self.tally.error(f"{type(exc).__name__}: {exc}")
                else:
                    self.tally.reads += 1
                    if found is None:
                        self.tally.empty_reads += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def outages(self, at: list[float], started: float) -> None:
        rng = random.Random(self.rng.random())
        for moment in at:
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            down = rng.uniform(*self.params.down_s)
            when = self.run.elapsed()
            await asyncio.to_thread(self.stack.stop_redis)
            await asyncio.sleep(down)
            await asyncio.to_thread(self.stack.start_redis)
            self.run.fault(
                f"stopped Redis for {down:.1f}s ({len(self.pending)} invalidations waiting)",
                at=when,
            )

    # --- after the traffic --------------------------------------------------------------
    async def quiesce(self, timeout_s: float) -> None:
        """Land every kept invalidation and wait for the subscribers (bounded)."""
        deadline = time.monotonic() + timeout_s
        while not await self.retry_pending():
            if time.monotonic() > deadline:
                self.run.report.errors += len(self.pending)
                self.run.note(f"{len(self.pending)} invalidations never landed")
                break
            await asyncio.sleep(0.2)
        for subscriber in self.subscribers:
            if not await subscriber.wait_subscribed(max(0.1, deadline - time.monotonic())):
                self.run.note("an L1 subscriber did not resubscribe")
        await asyncio.sleep(0.5)  # invalidation messages still on their way

    async def count_stale(self) -> tuple[int, int]:
        """Entries older than the database: (in Redis, in the L1s)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(f"SELECT key, version FROM {TABLE}")
            versions = {str(key): int(version) for key, version in await cursor.fetchall()}
        keys = Keys(NAMESPACE)
        names = sorted(versions)
        in_redis = 0
        client = self.clients[0]
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            blobs = await client.mget([keys.entry(name) for name in chunk])
            for name, blob in zip(chunk, blobs, strict=True):
                entry = decode_entry(blob)
                if entry is not None and not entry.is_tombstone and entry.version < versions[name]:
                    in_redis += 1
        in_l1 = 0
        for cache in self.caches:
            for name in names:
                held = cache.peek_local(name)
                if held is not None and held.version < versions[name]:
                    in_l1 += 1
        return in_redis, in_l1

    def degraded_reads(self) -> int:
        """Reads the loader served because Redis was unreachable (the caches' metric)."""
        return int(
            sum(
                registry.get_sample_value(
                    "sidestream_cache_degraded_reads_total", {"cache": NAMESPACE}
                )
                or 0
                for registry in self.registries
            )
        )


def _outage_times(rng: random.Random, params: Params) -> list[float]:
    # Outages start in the first 70% of the traffic and never overlap.
    slot = params.traffic_s * 0.7 / params.outages
    return [i * slot + rng.uniform(0.1, 0.5) * slot for i in range(params.outages)]


async def _run_traffic(run: ScenarioRun, stack: PrivateStack, params: Params, seed: int) -> None:
    traffic = _Traffic(run, stack, params, seed)
    await traffic.open()
    try:
        for _ in range(20):  # a few entities before anyone reads
            event = traffic.events.next("entity")
            assert isinstance(event, EntityChanged)
            await traffic.write(event)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(traffic.writer()),
            *(asyncio.create_task(traffic.reader(n)) for n in range(params.readers)),
        ]
        outages = asyncio.create_task(traffic.outages(_outage_times(traffic.rng, params), started))
        await asyncio.sleep(params.traffic_s)
        await outages  # the last outage ends (Redis is back) before the traffic stops
        traffic.stopping.set()
        await asyncio.gather(*tasks)
        run.log(f"{traffic.tally.writes:,} writes, {traffic.tally.reads:,} reads; quiescing")
        await traffic.quiesce(timeout_s=30)
        in_redis, in_l1 = await traffic.count_stale()
        tally = traffic.tally
        report = run.report
        report.events_in = tally.writes
        report.rows_out = tally.reads
        report.stale = in_redis + in_l1
        report.errors += tally.failed_reads + tally.empty_reads
        run.note("events in = writes, rows out = reads served")
        run.note(
            f"{traffic.degraded_reads():,} reads served by the loader while Redis was down; "
            f"{tally.failed_invalidations:,} invalidations kept and retried; "
            f"{len(traffic.keys):,} entities"
        )
        if in_redis or in_l1:
            run.note(f"stale entries: {in_redis} in Redis, {in_l1} in L1s")
        if tally.failed_reads:
            run.note(f"{tally.failed_reads} failed reads, e.g. {tally.first_errors}")
        if tally.empty_reads:
            run.note(f"{tally.empty_reads} reads found no entity that exists")
    finally:
        traffic.stopping.set()
        await traffic.close()


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario; passes with no failed read and no stale entry after quiescence."""
    params = params or SIZES[ctx.size]
    rng = ctx.rng(NAME)
    with ScenarioRun(ctx, NAME, budget_s=params.budget_s) as run:
        stack = run.private_stack()
        with postgres_connect(stack.settings, autocommit=True) as conn:
            conn.execute(
                f"CREATE TABLE {TABLE} (key text PRIMARY KEY, version bigint NOT NULL, "
                "body text NOT NULL)"
            )
        run.log(
            f"{params.traffic_s:.0f}s of traffic: {params.write_rate:,.0f} writes/s, "
            f"{params.read_rate:,.0f} reads/s through {params.caches} caches; "
            f"{params.outages} Redis outages"
        )
        coroutine = _run_traffic(run, stack, params, rng.randrange(2**31))
        asyncio.run(asyncio.wait_for(coroutine, run.remaining()))
    return run.report
