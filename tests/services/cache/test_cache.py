"""VersionedCache against the real Redis: stampedes, versions, XFetch, TTLs, lists."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from runtime import Settings, new_registry
from services.cache import (
    LoaderTimeoutError,
    NotFound,
    Versioned,
    VersionedCache,
    cache_redis,
)
from services.cache.entry import Kind, decode_entry
from tests.support.clocks import FakeClock


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"sidestream_cache_{name}", labels)
    return 0.0 if value is None else value


def raw_entry(redis_conn: redis.Redis, cache: VersionedCache, key: str) -> tuple[Kind, int] | None:
    raw = redis_conn.get(cache.keys.entry(key))
    assert raw is None or isinstance(raw, bytes)
    entry = decode_entry(raw)
    return None if entry is None else (entry.kind, entry.version)


@asynccontextmanager
async def open_cache(
    settings: Settings, namespace: str, **options: Any
) -> AsyncIterator[tuple[VersionedCache, CollectorRegistry]]:
    """A cache on its own client (its own connection pool, like a separate process)."""
    client = cache_redis(settings)
    registry = new_registry()
    cache = VersionedCache(redis=client, namespace=namespace, registry=registry, **options)
    try:
        yield cache, registry
    finally:
        await cache.aclose()
        await client.aclose()


class Database:
    """The source of truth the loaders read: one entity with a value and a version."""

    def __init__(self, value: Any, version: int = 1) -> None:
        self.value, self.version = value, version
        self.loads = 0
        self.started = asyncio.Event()
        self.gate: asyncio.Event | None = None  # when set: loads wait for it

    def write(self, value: Any) -> int:
        self.value, self.version = value, self.version + 1
        return self.version

    async def load(self) -> Versioned:
        self.loads += 1
        snapshot = Versioned(self.value, self.version)  # read, then (maybe) stall
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


def test_a_thousand_concurrent_misses_call_the_loader_once(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database({"name": "ada"}, version=3)

        async def slow_load() -> Versioned:
            await asyncio.sleep(0.05)
            return await db.load()

        async with open_cache(stack_settings, key_prefix + "c") as (cache, registry):
            results = await asyncio.gather(
                *(cache.get_or_load("user:1", slow_load, 60) for _ in range(1000))
            )
            assert db.loads == 1
            assert results == [Versioned({"name": "ada"}, 3)] * 1000
            assert sample(registry, "loads_total", cache=cache.keys.namespace) == 1
            assert sample(registry, "misses_total", cache=cache.keys.namespace) == 1000
            # Now cached in Redis: another round is a hit, still one load.
            assert await cache.get_or_load("user:1", slow_load, 60) == results[0]
            assert db.loads == 1
            assert sample(registry, "hits_total", cache=cache.keys.namespace, layer="redis") == 1

    asyncio.run(body())


def test_a_thousand_concurrent_misses_over_ten_clients_call_the_loader_once(
    stack_settings: Settings, key_prefix: str
) -> None:
    # Ten caches with ten connection pools: in-process single flight cannot help across
    # them, only the Redis lock can.
    async def body() -> None:
        db = Database("value")

        async def slow_load() -> Versioned:
            await asyncio.sleep(0.2)
            return await db.load()

        caches = [open_cache(stack_settings, key_prefix + "c") for _ in range(10)]
        opened = [await c.__aenter__() for c in caches]
        try:
            results = await asyncio.gather(
                *(cache.get_or_load("k", slow_load, 60) for cache, _ in opened for _ in range(100))
            )
            assert db.loads == 1
            assert results == [Versioned("value", 1)] * 1000
            namespace = key_prefix + "c"
            waits = sum(sample(reg, "lock_waits_total", cache=namespace) for _, reg in opened)
            assert waits >= 1  # someone waited for the winner instead of loading
            timeouts = sum(
                sample(reg, "lock_wait_timeouts_total", cache=namespace) for _, reg in opened
            )
            assert timeouts == 0
        finally:
            for c in caches:
                await c.__aexit__(None, None, None)

    asyncio.run(body())


def test_a_waiter_loads_itself_only_after_its_bound(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database("v")
        db.gate = asyncio.Event()
        namespace = key_prefix + "c"
        async with (
            open_cache(stack_settings, namespace) as (winner, _),
            open_cache(stack_settings, namespace, waiter_max_wait_ms=300) as (waiter, registry),
        ):
            stuck = asyncio.create_task(winner.get_or_load("k", db.load, 60))
            await asyncio.wait_for(db.started.wait(), 5)

            other = Database("v")
            started = time.monotonic()
            assert await waiter.get_or_load("k", other.load, 60) == Versioned("v", 1)
            assert time.monotonic() - started >= 0.3
            assert other.loads == 1
            assert sample(registry, "lock_waits_total", cache=namespace) == 1
            assert sample(registry, "lock_wait_timeouts_total", cache=namespace) == 1
            db.gate.set()
            assert await stuck == Versioned("v", 1)

    asyncio.run(body())


def test_a_reader_that_loaded_before_a_write_cannot_put_the_old_value_back(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database("v1")
        db.gate = asyncio.Event()
        async with open_cache(stack_settings, key_prefix + "c") as (cache, registry):
            reader = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            await asyncio.wait_for(db.started.wait(), 5)  # the reader holds v1 in hand

            new_version = db.write("v2")  # a write commits v2 ...
            assert await cache.invalidate("k", new_version)  # ... and the consumer runs
            assert raw_entry(redis_conn, cache, "k") == (Kind.TOMBSTONE, 2)

            db.gate.set()
            # The slow reader returns what it read, but may not cache it.
            assert await reader == Versioned("v1", 1)
            assert raw_entry(redis_conn, cache, "k") == (Kind.TOMBSTONE, 2)
            namespace = cache.keys.namespace
            assert sample(registry, "stale_fills_refused_total", cache=namespace) == 1

            db.gate = None
            assert await cache.get_or_load("k", db.load, 60) == Versioned("v2", 2)
            assert raw_entry(redis_conn, cache, "k") == (Kind.TEXT, 2)
            assert db.loads == 2

    asyncio.run(body())


def test_a_fill_at_the_tombstone_version_replaces_it_and_is_served(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database("v5", version=5)
        async with open_cache(stack_settings, key_prefix + "c") as (cache, _):
            assert await cache.invalidate("k", 5)
            assert await cache.get_or_load("k", db.load, 60) == Versioned("v5", 5)
            assert raw_entry(redis_conn, cache, "k") == (Kind.TEXT, 5)
            assert await cache.get_or_load("k", db.load, 60) == Versioned("v5", 5)
            assert db.loads == 1
            # A replayed or older invalidation leaves the fresher entry alone.
            assert not await cache.invalidate("k", 5)
            assert not await cache.invalidate("k", 4)
            assert raw_entry(redis_conn, cache, "k") == (Kind.TEXT, 5)

    asyncio.run(body())


def test_the_tombstone_expires(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        options = {"tombstone_ttl_ms": 300, "loader_timeout_ms": 100}
        async with open_cache(stack_settings, key_prefix + "c", **options) as (cache, _):
            assert await cache.invalidate("k", 9)
            name = cache.keys.entry("k")
            assert 0 < redis_conn.pttl(name) <= 300
            deadline = time.monotonic() + 5
            while redis_conn.exists(name) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not redis_conn.exists(name)
            # With the tombstone gone nothing remembers v9: an old value is accepted
            # (which is why tombstone_ttl_ms must exceed loader_timeout_ms).
            old = Database("old", version=3)
            assert await cache.get_or_load("k", old.load, 60) == Versioned("old", 3)
            assert raw_entry(redis_conn, cache, "k") == (Kind.TEXT, 3)

    asyncio.run(body())


def test_not_found_is_cached_briefly_and_versioned(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        loads = 0

        async def missing() -> None:
            nonlocal loads
            loads += 1

        async with open_cache(stack_settings, key_prefix + "c", negative_ttl_ms=2_000) as (
            cache,
            _,
        ):
            assert await cache.get_or_load("k", missing, 3600) is None
            assert await cache.get_or_load("k", missing, 3600) is None
            assert loads == 1
            assert raw_entry(redis_conn, cache, "k") == (Kind.NOT_FOUND, 0)
            assert 0 < redis_conn.pttl(cache.keys.entry("k")) <= 2_200  # capped, jittered

            # The entity is created at v1: the negative entry at v0 gives way ...
            assert await cache.invalidate("k", 1)
            created = Database("hello")
            assert await cache.get_or_load("k", created.load, 60) == Versioned("hello", 1)

            # ... and it is deleted at v2; a loader that knows that version caches it.
            assert await cache.invalidate("k", 2)

            async def deleted() -> NotFound:
                return NotFound(version=2)

            assert await cache.get_or_load("k", deleted, 60) is None
            assert raw_entry(redis_conn, cache, "k") == (Kind.NOT_FOUND, 2)

    asyncio.run(body())


def test_xfetch_recomputes_early_near_expiry_with_a_large_beta(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        clock = FakeClock(time.time())
        calls = 0

        async def load() -> Versioned:
            nonlocal calls
            calls += 1
            clock.now += 2.0  # every load "takes" 2 s: delta = 2000 ms
            return Versioned(f"v{calls}", calls)

        options = {"clock": clock, "random": lambda: 0.5, "xfetch_beta": 1.0, "ttl_jitter": 0.0}
        async with open_cache(stack_settings, key_prefix + "c", **options) as (cache, registry):
            assert await cache.get_or_load("k", load, 60) == Versioned("v1", 1)
            raw = redis_conn.get(cache.keys.entry("k"))
            assert isinstance(raw, bytes)
            entry = decode_entry(raw)
            assert entry is not None
            assert entry.delta_ms == 2000
            expiry = entry.expiry_ms / 1000
            # -ln(0.5) * 2 s * beta 1 = 1.39 s: 10 s before expiry is too early ...
            clock.now = expiry - 10
            assert await cache.get_or_load("k", load, 60) == Versioned("v1", 1)
            assert calls == 1
            # ... 1 s before expiry is not.
            clock.now = expiry - 1
            assert await cache.get_or_load("k", load, 60) == Versioned("v2", 2)
            assert calls == 2
            namespace = cache.keys.namespace
            assert sample(registry, "early_recomputes_total", cache=namespace) == 1
            assert raw_entry(redis_conn, cache, "k") == (Kind.TEXT, 2)
            assert not redis_conn.exists(cache.keys.lock(cache.keys.entry("k")))

    asyncio.run(body())


def test_xfetch_with_beta_zero_never_recomputes_early(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        clock = FakeClock(time.time())
        calls = 0

        async def load() -> Versioned:
            nonlocal calls
            calls += 1
            clock.now += 30.0
            return Versioned(calls, calls)

        options = {"clock": clock, "random": lambda: 1e-12, "xfetch_beta": 0.0}
        async with open_cache(stack_settings, key_prefix + "c", **options) as (cache, registry):
            await cache.get_or_load("k", load, 60)
            raw = redis_conn.get(cache.keys.entry("k"))
            assert isinstance(raw, bytes)
            entry = decode_entry(raw)
            assert entry is not None
            for before_expiry in (50.0, 1.0, 0.002):
                clock.now = entry.expiry_ms / 1000 - before_expiry
                assert await cache.get_or_load("k", load, 60) == Versioned(1, 1)
            assert calls == 1
            assert sample(registry, "early_recomputes_total", cache=cache.keys.namespace) == 0

    asyncio.run(body())


def test_only_one_reader_recomputes_early_the_others_serve_the_current_value(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        clock = FakeClock(time.time())
        db = Database("v1")
        namespace = key_prefix + "c"
        options = {"clock": clock, "random": lambda: 0.5, "xfetch_beta": 1.0}
        async with (
            open_cache(stack_settings, namespace, **options) as (first, first_registry),
            open_cache(stack_settings, namespace, **options) as (second, second_registry),
        ):

            async def load_slowly() -> Versioned:
                clock.now += 2.0
                return await db.load()

            await first.get_or_load("k", load_slowly, 60)
            raw = redis_conn.get(first.keys.entry("k"))
            assert isinstance(raw, bytes)
            entry = decode_entry(raw)
            assert entry is not None
            clock.now = entry.expiry_ms / 1000 - 0.5  # inside the XFetch window for all

            db.write("v2")
            db.gate, db.started = asyncio.Event(), asyncio.Event()
            recomputing = asyncio.create_task(first.get_or_load("k", load_slowly, 60))
            await asyncio.wait_for(db.started.wait(), 5)

            other = Database("never read")
            assert await second.get_or_load("k", other.load, 60) == Versioned("v1", 1)
            assert other.loads == 0
            db.gate.set()
            assert await recomputing == Versioned("v2", 2)
            assert sample(first_registry, "early_recomputes_total", cache=namespace) == 1
            assert sample(second_registry, "early_recomputes_total", cache=namespace) == 0

    asyncio.run(body())


def test_ttl_jitter_spreads_redis_ttls_within_bounds(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> list[int]:
        async with open_cache(stack_settings, key_prefix + "c", ttl_jitter=0.1) as (cache, _):
            await asyncio.gather(
                *(cache.get_or_load(f"k{i}", Database(i).load, 100) for i in range(40))
            )
            return [redis_conn.pttl(cache.keys.entry(f"k{i}")) for i in range(40)]

    ttls = asyncio.run(body())
    assert all(85_000 <= ttl <= 110_000 for ttl in ttls), ttls  # 90 s minus elapsed time
    assert max(ttls) - min(ttls) > 2_000  # spread, not one expiry for all


def test_the_fill_lock_is_released_only_by_its_owner(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database("v")
        db.gate = asyncio.Event()
        async with open_cache(stack_settings, key_prefix + "c") as (cache, _):
            lock_name = cache.keys.lock(cache.keys.entry("k"))
            loading = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            await asyncio.wait_for(db.started.wait(), 5)
            token = redis_conn.get(lock_name)
            assert token is not None
            assert 0 < redis_conn.pttl(lock_name) <= 5_000

            intruder = Lock(cache.redis, lock_name, timeout=5, thread_local=False)
            intruder.local.token = b"not-the-owner"
            with pytest.raises(LockNotOwnedError):
                await intruder.release()
            assert redis_conn.get(lock_name) == token  # compare-and-delete did nothing

            db.gate.set()
            assert await loading == Versioned("v", 1)
            assert not redis_conn.exists(lock_name)  # the owner's release did

    asyncio.run(body())


def test_list_caches_follow_the_generation_without_scanning(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        rows = ["a", "b"]
        loads = 0
        gate: asyncio.Event | None = None
        started = asyncio.Event()

        async def list_orders() -> list[str]:
            nonlocal loads
            loads += 1
            snapshot = list(rows)
            started.set()
            if gate is not None:
                await gate.wait()
            return snapshot

        async with open_cache(stack_settings, key_prefix + "c") as (cache, _):
            first = await cache.generation("acme", "orders")
            assert await cache.generation("acme", "orders") == first
            other_tenant = await cache.generation("globex", "orders")

            assert await cache.get_or_load_list("acme", "orders", "p=1", list_orders, 60) == rows
            assert await cache.get_or_load_list("acme", "orders", "p=1", list_orders, 60) == rows
            assert loads == 1

            rows.append("c")
            assert await cache.bump_generation("acme", "orders") == first + 1
            assert await cache.get_or_load_list("acme", "orders", "p=1", list_orders, 60) == [
                "a",
                "b",
                "c",
            ]
            assert loads == 2
            assert await cache.generation("globex", "orders") == other_tenant

            # A list read before a bump and stored after it is stored under the old key.
            gate, started = asyncio.Event(), asyncio.Event()
            slow = asyncio.create_task(
                cache.get_or_load_list("acme", "orders", "p=2", list_orders, 60)
            )
            await asyncio.wait_for(started.wait(), 5)
            rows.append("d")
            await cache.bump_generation("acme", "orders")
            gate.set()
            assert await slow == ["a", "b", "c"]
            gate = None
            assert await cache.get_or_load_list("acme", "orders", "p=2", list_orders, 60) == [
                "a",
                "b",
                "c",
                "d",
            ]
            assert loads == 4

    asyncio.run(body())


def test_invalidate_many_tombstones_every_key_in_pipelined_chunks(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        async with open_cache(stack_settings, key_prefix + "c") as (cache, registry):
            keys = [f"k{i}" for i in range(600)]  # more than one pipeline chunk
            await asyncio.gather(*(cache.get_or_load(k, Database(k).load, 60) for k in keys))
            assert await cache.invalidate_many((k, 2) for k in keys) == [True] * 600
            assert await cache.invalidate_many([(k, 1) for k in keys]) == [False] * 600
            for key in (keys[0], keys[299], keys[-1]):
                assert raw_entry(redis_conn, cache, key) == (Kind.TOMBSTONE, 2)
            assert sample(registry, "invalidations_total", cache=cache.keys.namespace) == 1200

    asyncio.run(body())


def test_loader_errors_and_timeouts_cache_nothing_and_free_the_lock(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    async def body() -> None:
        async def broken() -> Versioned:
            raise RuntimeError("database on fire")

        async def stuck() -> Versioned:
            await asyncio.sleep(5)
            return Versioned("late", 1)

        options = {"loader_timeout_ms": 100, "tombstone_ttl_ms": 1_000}
        async with open_cache(stack_settings, key_prefix + "c", **options) as (cache, registry):
            with pytest.raises(RuntimeError, match="on fire"):
                await cache.get_or_load("k", broken, 60)
            with pytest.raises(LoaderTimeoutError) as caught:
                await cache.get_or_load("k", stuck, 60)
            assert caught.value.timeout_ms == 100
            assert not redis_conn.exists(cache.keys.entry("k"))
            assert not redis_conn.exists(cache.keys.lock(cache.keys.entry("k")))
            assert sample(registry, "loader_errors_total", cache=cache.keys.namespace) == 2
            assert await cache.get_or_load("k", Database("fine").load, 60) == Versioned("fine", 1)

    asyncio.run(body())


def test_a_cancelled_caller_leaves_the_shared_load_running_for_the_others(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        db = Database("v")
        db.gate = asyncio.Event()
        async with open_cache(stack_settings, key_prefix + "c") as (cache, _):
            impatient = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            patient = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            await asyncio.wait_for(db.started.wait(), 5)
            impatient.cancel()
            db.gate.set()
            assert await patient == Versioned("v", 1)
            assert impatient.cancelled()
            assert db.loads == 1

    asyncio.run(body())


def test_misuse_is_rejected_when_the_cache_is_built(stack_settings: Settings) -> None:
    async def body() -> None:
        client = cache_redis(stack_settings)
        decoding = cache_redis(stack_settings, decode_responses=True)
        try:
            registry = new_registry()
            with pytest.raises(ValueError, match="tombstone_ttl_ms"):
                VersionedCache(
                    redis=client,
                    namespace="x",
                    registry=registry,
                    tombstone_ttl_ms=1_000,
                    loader_timeout_ms=1_000,
                )
            with pytest.raises(ValueError, match="decode"):
                VersionedCache(redis=decoding, namespace="x", registry=registry)
            with pytest.raises(ValueError, match="ttl_jitter"):
                VersionedCache(redis=client, namespace="x", registry=registry, ttl_jitter=1.0)
            with pytest.raises(ValueError, match="lock_ttl_ms"):
                VersionedCache(redis=client, namespace="x", registry=registry, lock_ttl_ms=0)
            cache = VersionedCache(redis=client, namespace="x", registry=registry)
            with pytest.raises(ValueError, match="ttl"):
                await cache.get_or_load("k", Database(1).load, 0)
        finally:
            await client.aclose()
            await decoding.aclose()

    asyncio.run(body())


def test_a_read_that_starts_after_an_invalidation_does_not_join_an_older_load(
    stack_settings: Settings, key_prefix: str
) -> None:
    # Read-your-writes in one process: the first read started before the write and
    # carries v1; a read started after invalidate() must not share its result.
    async def body() -> None:
        db = Database("v1")
        db.gate = asyncio.Event()
        async with open_cache(stack_settings, key_prefix + "c") as (cache, _):
            before = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            await asyncio.wait_for(db.started.wait(), 5)
            await cache.invalidate("k", db.write("v2"))
            after = asyncio.create_task(cache.get_or_load("k", db.load, 60))
            await asyncio.sleep(0.05)  # let it find the lock held and start waiting
            db.gate.set()
            assert await before == Versioned("v1", 1)
            assert await after == Versioned("v2", 2)
            assert db.loads == 2

    asyncio.run(body())
