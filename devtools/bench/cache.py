"""Cache: ``VersionedCache.get_or_load`` hits, a stampede, and invalidation across processes.

- L1 hit and Redis hit, per call (p50/p99), each next to the least any cache could do
  for the same answer: for the L1, awaiting a plain dict lookup plus the same decode of
  the same entry; for Redis, a raw ``GET`` of the same key on the same client. The two
  sides alternate in rounds.
- 1,000 concurrent misses on one key, spread over ten clients (ten connection pools, as
  ten processes would be: in-process single flight cannot help across them, only the
  Redis lock can) → loader calls, next to naive cache-aside (``GET``, load, ``SET``).
- write → L1 eviction in another process: ``cache.invalidate`` here, a child process
  (``python -m devtools.bench.peers l1``) with an L1 and an ``L1Subscriber`` prints
  when its entry was evicted, on CLOCK_MONOTONIC, which both processes share.

Cached values are synthetic audit events (as JSON objects), from ``SyntheticEvents``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import time
from typing import IO, Any

from redis.asyncio import Redis

from devtools.bench.harness import (
    BenchContext,
    Figure,
    Target,
    percentile,
    stop_process,
    time_against,
)
from producers.synthetic import SyntheticEvents
from runtime import new_registry
from services.cache import L1, Versioned, VersionedCache, cache_redis

__all__ = ["run"]

SECTION = "cache"

_TTL_S = 300.0
_STAMPEDE_CLIENTS = 10
_STAMPEDE_CALLS = 1000
_LOAD_S = 0.05  # what the "database" takes for one load in the stampede
_LINE_TIMEOUT_S = 10.0
_START_TIMEOUT_S = 60.0  # a Python process importing the stack, on a busy machine


def _client(ctx: BenchContext, **options: Any) -> Redis:
    """A cache client with patient timeouts: on a busy machine a 250 ms stall would turn
    a hit into a degraded read (a loader call), which is not what is measured here."""
    return cache_redis(ctx.settings, socket_timeout=5, socket_connect_timeout=5, **options)


def _value(ctx: BenchContext) -> Any:
    """A realistic cached object: one synthetic audit event as a JSON object."""
    event = next(SyntheticEvents(seed=ctx.seed).take(1, "audit"))
    return json.loads(json.dumps(dataclasses.asdict(event), default=str))


async def _hits(ctx: BenchContext, client: Redis, namespace: str, value: Any) -> list[Figure]:
    n_l1 = ctx.sizes.pick(5_000, 200_000)
    n_redis = ctx.sizes.pick(1_000, 20_000)
    loads = 0

    async def load() -> Versioned:
        nonlocal loads
        loads += 1
        return Versioned(value, 1)

    # L1 hit: a long L1 TTL, so nothing expires while we sample.
    l1 = L1(ttl=3600)
    with_l1 = VersionedCache(redis=client, namespace=namespace, registry=new_registry(), l1=l1)
    await with_l1.get_or_load("hot", load, _TTL_S)
    name = with_l1.keys.entry("hot")
    entry = l1.get(name)
    if entry is None:
        raise RuntimeError("the first read did not fill the L1")
    plain = {name: entry}

    async def l1_hit() -> object:
        return await with_l1.get_or_load("hot", load, _TTL_S)

    async def dict_hit() -> object:
        return plain[name].result()

    l1_samples, dict_samples = await time_against(l1_hit, dict_hit, n_l1)

    # Redis hit: no L1, so every call goes to Redis.
    redis_only = VersionedCache(redis=client, namespace=namespace, registry=new_registry())

    async def redis_hit() -> object:
        return await redis_only.get_or_load("hot", load, _TTL_S)

    async def raw_get() -> object:
        return await client.get(name)

    redis_samples, get_samples = await time_against(redis_hit, raw_get, n_redis)
    await with_l1.aclose()
    await redis_only.aclose()
    if loads != 1:
        raise RuntimeError(f"{loads} loads while timing hits: some calls were misses")

    figures = []
    for label, ours, base, base_name in (
        ("L1 hit", l1_samples, dict_samples, "await dict lookup + same decode"),
        ("Redis hit", redis_samples, get_samples, "raw redis.asyncio GET, same key"),
    ):
        for fraction, tag in ((0.5, "p50"), (0.99, "p99")):
            figures.append(
                Figure(
                    SECTION,
                    f"get_or_load {label} {tag}",
                    percentile(ours, fraction),
                    "µs",
                    percentile(base, fraction),
                    base_name,
                    note=f"{len(ours):,} calls" if tag == "p50" else "",
                )
            )
    return figures


async def _stampede_loads(ctx: BenchContext, namespace: str, key: str) -> int:
    """Loader calls for 1,000 concurrent misses on ``key`` over ten caches."""
    loads = 0

    async def load() -> Versioned:
        nonlocal loads
        loads += 1
        await asyncio.sleep(_LOAD_S)
        return Versioned("fresh", 1)

    clients = [_client(ctx) for _ in range(_STAMPEDE_CLIENTS)]
    caches = [
        VersionedCache(redis=client, namespace=namespace, registry=new_registry())
        for client in clients
    ]
    try:
        per_client = _STAMPEDE_CALLS // _STAMPEDE_CLIENTS
        async with asyncio.timeout(60):
            results = await asyncio.gather(
                *(
                    cache.get_or_load(key, load, _TTL_S)
                    for cache in caches
                    for _ in range(per_client)
                )
            )
        if any(result != Versioned("fresh", 1) for result in results):
            raise RuntimeError("a stampede reader got something else than the loaded value")
    finally:
        for cache in caches:
            await cache.aclose()
        for client in clients:
            await client.aclose()
    return loads


async def _naive_loads(ctx: BenchContext, namespace: str, key: str) -> int:
    """The same stampede on plain cache-aside: ``GET``; on a miss load and ``SET``."""
    loads = 0
    per_client = _STAMPEDE_CALLS // _STAMPEDE_CLIENTS
    # More connections than the cache needs: the naive side must not wait for the pool.
    clients = [_client(ctx, max_connections=16, pool_timeout=10) for _ in range(_STAMPEDE_CLIENTS)]

    async def read(client: Redis) -> None:
        nonlocal loads
        if await client.get(key) is not None:
            return
        loads += 1
        await asyncio.sleep(_LOAD_S)
        await client.set(key, b"fresh", px=int(_TTL_S * 1000))

    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(read(client) for client in clients for _ in range(per_client)))
    finally:
        for client in clients:
            await client.aclose()
    return loads


async def _read_line(stream: IO[str], what: str, timeout: float = _LINE_TIMEOUT_S) -> list[str]:
    """The next line of a child's stdout, split; bounded (the caller kills the child on
    failure, which also ends the blocked read)."""
    line = await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)
    if not line:
        raise RuntimeError(f"the L1 peer exited while we waited for {what}")
    return line.split()


async def _evictions(
    client: Redis, namespace: str, peer: subprocess.Popen[str], rounds: int
) -> list[float]:
    """Milliseconds from ``invalidate()`` called here to the entry gone from the peer's L1."""
    if peer.stdin is None or peer.stdout is None:
        raise ValueError("the peer needs stdin and stdout pipes")
    if await _read_line(peer.stdout, "READY", _START_TIMEOUT_S) != ["READY"]:
        raise RuntimeError("the L1 peer did not start")
    writer = VersionedCache(redis=client, namespace=namespace, registry=new_registry())
    latencies: list[float] = []
    key = "watched"
    try:
        for version in range(1, rounds + 1):
            peer.stdin.write(f"LOAD {key} {version}\n")
            peer.stdin.flush()
            reply = await _read_line(peer.stdout, "HELD")
            if reply != ["HELD", str(version)]:
                raise RuntimeError(f"the L1 peer answered {reply} to LOAD {version}")
            started = time.monotonic()
            await writer.invalidate(key, version + 1)
            while True:
                reply = await _read_line(peer.stdout, "EVICTED")
                if reply[0] == "EVICTED" and int(reply[1]) >= version + 1:
                    latencies.append((float(reply[2]) - started) * 1000)
                    break
    finally:
        await writer.aclose()
    return latencies


async def _measure(ctx: BenchContext) -> list[Figure]:
    namespace = ctx.namespace("cache")
    client = _client(ctx)
    try:
        figures = await _hits(ctx, client, namespace, _value(ctx))

        rounds = ctx.sizes.pick(2, 5)
        stampedes = [await _stampede_loads(ctx, namespace, f"stampede-{i}") for i in range(rounds)]
        naive = [
            await _naive_loads(ctx, namespace, f"{namespace}:naive-{i}") for i in range(rounds)
        ]
        figures.append(
            Figure(
                SECTION,
                "1,000 concurrent misses on one key: loader calls",
                max(stampedes),
                "calls",
                max(naive),
                "naive cache-aside (GET, load, SET)",
                Target("<=", 1, on="value"),
                note=f"worst of {rounds} rounds, {_STAMPEDE_CLIENTS} clients",
            )
        )

        peer = ctx.spawn(
            [sys.executable, "-m", "devtools.bench.peers", "l1", namespace],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            evictions = await _evictions(client, namespace, peer, ctx.sizes.pick(100, 2_000))
        finally:
            stop_process(peer, timeout=10)
        figures += [
            Figure(
                SECTION,
                "write → L1 eviction in another process p50",
                percentile(evictions, 0.5),
                "ms",
                note=f"{len(evictions):,} invalidations",
            ),
            Figure(
                SECTION,
                "write → L1 eviction in another process p99",
                percentile(evictions, 0.99),
                "ms",
                target=Target("<=", 50, on="value"),
                note="invalidate() → tombstone + PUBLISH → L1Subscriber",
            ),
        ]
        return figures
    finally:
        await client.aclose()


def run(ctx: BenchContext) -> list[Figure]:
    with ctx.console.status("cache: hits, stampede, cross-process eviction..."):
        return asyncio.run(_measure(ctx))
