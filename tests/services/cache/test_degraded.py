"""Redis unreachable: reads go through the loader, never raise; writes raise clearly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from devtools.localstack.redis import RedisServer
from runtime import Settings, new_registry
from runtime.ports import refused_port
from services.cache import (
    L1,
    CacheUnavailableError,
    Versioned,
    VersionedCache,
    cache_redis,
)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(f"sidestream_cache_{name}", labels)
    return 0.0 if value is None else value


# Bound but never listening, for the whole module: connections are refused, and no other
# process can take the port meanwhile (a free port picked and closed could be taken).
_NOWHERE_PORT = contextlib.ExitStack().enter_context(refused_port())


def nowhere() -> Redis:
    """A client for a port where nothing listens: connections are refused."""
    return Redis(
        host="127.0.0.1",
        port=_NOWHERE_PORT,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=Retry(NoBackoff(), 0),
    )


class Counter:
    def __init__(self) -> None:
        self.loads = 0

    async def load(self) -> Versioned:
        self.loads += 1
        return Versioned({"n": self.loads}, self.loads)

    async def load_list(self) -> list[int]:
        self.loads += 1
        return [self.loads]


def test_reads_go_through_the_loader_when_nothing_listens() -> None:
    async def body() -> None:
        client = nowhere()
        registry = new_registry()
        cache = VersionedCache(redis=client, namespace="down", registry=registry)
        source = Counter()
        started = time.monotonic()
        try:
            results = [await cache.get_or_load("k", source.load, 60) for _ in range(3)]
            assert results == [Versioned({"n": i}, i) for i in (1, 2, 3)]
            assert await cache.get_or_load_list("t", "c", "q", source.load_list, 60) == [4]
        finally:
            await client.aclose()
        assert time.monotonic() - started < 5
        assert sample(registry, "degraded_reads_total", cache="down") == 4
        assert sample(registry, "loads_total", cache="down") == 4

    asyncio.run(body())


def test_the_l1_keeps_serving_while_redis_is_down() -> None:
    async def body() -> None:
        client = nowhere()
        registry = new_registry()
        cache = VersionedCache(redis=client, namespace="down", registry=registry, l1=L1(ttl=30))
        source = Counter()
        try:
            for _ in range(5):
                assert await cache.get_or_load("k", source.load, 60) == Versioned({"n": 1}, 1)
            assert source.loads == 1
            assert sample(registry, "hits_total", cache="down", layer="l1") == 4
            assert sample(registry, "degraded_reads_total", cache="down") == 1
        finally:
            await client.aclose()

    asyncio.run(body())


def test_writes_raise_cache_unavailable_so_the_consumer_retries() -> None:
    async def body() -> None:
        client = nowhere()
        cache = VersionedCache(redis=client, namespace="down", registry=new_registry())
        try:
            with pytest.raises(CacheUnavailableError) as caught:
                await cache.invalidate("k", 2)
            assert caught.value.operation == "invalidate"
            assert caught.value.key == "k"
            with pytest.raises(CacheUnavailableError):
                await cache.invalidate_many([("a", 1), ("b", 1)])
            with pytest.raises(CacheUnavailableError):
                await cache.bump_generation("t", "c")
        finally:
            await client.aclose()

    asyncio.run(body())


@pytest.mark.chaos
def test_reads_survive_a_redis_stop_and_use_it_again_after_a_restart(
    stack_settings: Settings, tmp_path: Path
) -> None:
    server = RedisServer(stack_dir=tmp_path, port=0)
    server.start()  # port 0: any free port, kept when it restarts
    settings = stack_settings.with_overrides(redis_url=f"redis://127.0.0.1:{server.port}/0")

    async def body() -> None:
        client = cache_redis(settings)
        registry = new_registry()
        cache = VersionedCache(
            redis=client, namespace="chaos", registry=registry, outage_backoff_ms=200
        )
        source = Counter()
        try:
            assert await cache.get_or_load("k", source.load, 60) == Versioned({"n": 1}, 1)
            assert await cache.get_or_load("k", source.load, 60) == Versioned({"n": 1}, 1)

            server.stop()
            for expected in (2, 3):
                assert await cache.get_or_load("k", source.load, 60) == Versioned(
                    {"n": expected}, expected
                )
            assert sample(registry, "degraded_reads_total", cache="chaos") == 2

            server.start()  # empty: the local server persists nothing
            await asyncio.sleep(0.3)  # past outage_backoff_ms
            assert await cache.get_or_load("k", source.load, 60) == Versioned({"n": 4}, 4)
            assert await cache.get_or_load("k", source.load, 60) == Versioned({"n": 4}, 4)
            assert sample(registry, "degraded_reads_total", cache="chaos") == 2
        finally:
            await client.aclose()

    try:
        asyncio.run(body())
    finally:
        server.stop()
