"""L1s in two caches (two "processes" in one test) kept honest over pub/sub."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from runtime import Settings, new_registry
from services.cache import L1, L1Subscriber, Versioned, VersionedCache, cache_redis


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"sidestream_cache_{name}", labels)
    return 0.0 if value is None else value


class Node:
    """One "process": its own client, L1, registry and subscriber."""

    def __init__(self, cache: VersionedCache, registry: CollectorRegistry, sub: L1Subscriber):
        self.cache, self.registry, self.subscriber = cache, registry, sub

    def evictions(self, reason: str) -> float:
        return sample(
            self.registry, "l1_evictions_total", cache=self.cache.keys.namespace, reason=reason
        )


@asynccontextmanager
async def node(settings: Settings, namespace: str, **client_options: Any) -> AsyncIterator[Node]:
    client = cache_redis(settings, **client_options)
    registry = new_registry()
    cache = VersionedCache(
        redis=client, namespace=namespace, registry=registry, l1=L1(max_entries=100, ttl=60)
    )
    try:
        async with L1Subscriber(cache, ping_interval=1.0) as subscriber:
            assert await subscriber.wait_subscribed(10)
            yield Node(cache, registry, subscriber)
    finally:
        await cache.aclose()
        await client.aclose()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll for an async delivery, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def loader(value: Any, version: int) -> Callable[[], Any]:
    async def load() -> Versioned:
        return Versioned(value, version)

    return load


def test_an_invalidation_in_one_cache_evicts_the_other_caches_l1(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        namespace = key_prefix + "c"
        async with node(stack_settings, namespace) as a, node(stack_settings, namespace) as b:
            await a.cache.get_or_load("k", loader("v1", 1), 60)
            await b.cache.get_or_load("k", loader("unused", 1), 60)  # from Redis into b's L1
            assert b.cache.peek_local("k") == Versioned("v1", 1)
            assert await b.cache.get_or_load("k", loader("unused", 1), 60) == Versioned("v1", 1)
            assert sample(b.registry, "hits_total", cache=namespace, layer="l1") == 1

            await a.cache.invalidate("k", 2)
            assert a.cache.peek_local("k") is None  # its own L1 at once, no round trip
            assert await eventually(lambda: b.cache.peek_local("k") is None)
            assert b.evictions("invalidation") == 1

            # b reads the new version through Redis, not its (evicted) L1.
            assert await b.cache.get_or_load("k", loader("v2", 2), 60) == Versioned("v2", 2)
            assert await a.cache.get_or_load("k", loader("unused", 2), 60) == Versioned("v2", 2)

    asyncio.run(body())


def test_an_l1_ignores_an_invalidation_older_than_what_it_holds(
    stack_settings: Settings, key_prefix: str
) -> None:
    async def body() -> None:
        namespace = key_prefix + "c"
        async with node(stack_settings, namespace) as a, node(stack_settings, namespace) as b:
            await b.cache.get_or_load("k", loader("v5", 5), 60)
            await b.cache.get_or_load("marker", loader("m", 1), 60)
            await a.cache.invalidate("k", 3)  # a replayed, older event
            await a.cache.invalidate("marker", 2)  # published after it, so delivered after it
            assert await eventually(lambda: b.cache.peek_local("marker") is None)
            assert b.cache.peek_local("k") == Versioned("v5", 5)
            assert b.evictions("invalidation") == 1

    asyncio.run(body())


def test_a_resubscription_flushes_the_l1(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str, unique: Any
) -> None:
    # Invalidations published while the subscription was down are lost, so the L1 must
    # forget everything it holds once the subscription is back.
    async def body() -> None:
        name = unique("l1sub")
        namespace = key_prefix + "c"
        async with node(stack_settings, namespace, client_name=name) as b:
            await b.cache.get_or_load("k", loader("v1", 1), 60)
            assert b.cache.peek_local("k") is not None
            assert b.subscriber.subscriptions == 1

            clients = redis_conn.client_list()
            ours = [c for c in clients if c.get("name") == name and int(c.get("sub", 0)) > 0]
            assert len(ours) == 1
            assert redis_conn.client_kill_filter(_id=ours[0]["id"]) == 1

            assert await eventually(lambda: b.subscriber.subscriptions >= 2, timeout=10)
            assert b.cache.peek_local("k") is None
            # Emptied when the drop was noticed, not only when the subscription came back.
            assert b.evictions("subscription_lost") == 1
            assert b.evictions("resubscribe") == 0
            assert b.subscriber.subscribed
            assert b.cache.l1_live

    asyncio.run(body())


def test_a_subscriber_needs_an_l1(stack_settings: Settings) -> None:
    async def body() -> None:
        client = cache_redis(stack_settings)
        try:
            cache = VersionedCache(redis=client, namespace="x", registry=new_registry())
            with pytest.raises(ValueError, match="no L1"):
                L1Subscriber(cache)
        finally:
            await client.aclose()

    asyncio.run(body())


def test_an_idle_subscription_is_probed_without_flapping(stack_settings: Settings) -> None:
    # With a 1 s probe interval a missing or misread PONG would drop and re-establish
    # the subscription (flushing the L1) in 4 s. (Not shorter: a PONG may honestly take a
    # few hundred ms on a busy machine, and would then count as missing.)
    async def body() -> None:
        client = cache_redis(stack_settings)
        try:
            cache = VersionedCache(redis=client, namespace="idle", registry=new_registry(), l1=L1())
            async with L1Subscriber(cache, ping_interval=1.0) as subscriber:
                assert await subscriber.wait_subscribed(5)
                await asyncio.sleep(4.0)
                assert subscriber.subscriptions == 1
                assert subscriber.subscribed
        finally:
            await client.aclose()

    asyncio.run(body())
