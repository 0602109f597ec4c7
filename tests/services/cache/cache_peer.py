"""A second OS process for the cross-process tests (run as a script, not collected).

cache_peer.py l1 REDIS_URL NAMESPACE KEY
    Load KEY into its own L1 (TTL 60 s), print READY, then print EVICTED once another
    process's invalidation evicted it (or TIMEOUT after 15 s).
cache_peer.py stampede REDIS_URL NAMESPACE KEY CONCURRENCY COUNTER_KEY GO_KEY
    Print READY, wait until GO_KEY exists (at most 20 s), run CONCURRENCY concurrent
    get_or_load(KEY) whose loader INCRs COUNTER_KEY, print the values seen as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from pydantic import SecretStr

from runtime import Settings, new_registry
from services.cache import L1, L1Subscriber, Versioned, VersionedCache, cache_redis


def say(line: str) -> None:
    print(line, flush=True)


async def watch_l1(settings: Settings, namespace: str, key: str) -> None:
    client = cache_redis(settings)
    cache = VersionedCache(
        redis=client, namespace=namespace, registry=new_registry(), l1=L1(ttl=60)
    )

    async def load() -> Versioned:
        return Versioned("v1", 1)

    try:
        async with L1Subscriber(cache) as subscriber:
            if not await subscriber.wait_subscribed(10):
                say("NOT-SUBSCRIBED")
                return
            await cache.get_or_load(key, load, 60)
            if cache.peek_local(key) != Versioned("v1", 1):
                say("NOT-CACHED")
                return
            say("READY")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if cache.peek_local(key) is None:
                    say("EVICTED")
                    return
                await asyncio.sleep(0.01)
            say("TIMEOUT")
    finally:
        await client.aclose()


async def stampede(
    settings: Settings, namespace: str, key: str, concurrency: int, counter: str, go: str
) -> None:
    client = cache_redis(settings)
    cache = VersionedCache(
        redis=client, namespace=namespace, registry=new_registry(), waiter_max_wait_ms=10_000
    )

    async def load() -> Versioned:
        await client.incr(counter)
        await asyncio.sleep(0.3)
        return Versioned(f"loaded by {os.getpid()}", 1)

    try:
        say("READY")
        deadline = time.monotonic() + 20
        while not await client.exists(go):
            if time.monotonic() > deadline:
                say("NO-GO")
                return
            await asyncio.sleep(0.005)
        results = await asyncio.gather(
            *(cache.get_or_load(key, load, 60) for _ in range(concurrency))
        )
        values = sorted({r.value for r in results if r is not None})
        say(json.dumps({"values": values, "count": len(results)}))
    finally:
        await client.aclose()


def main(argv: list[str]) -> None:
    mode, url, namespace, key, *rest = argv
    settings = Settings(redis_url=SecretStr(url))
    if mode == "l1":
        asyncio.run(watch_l1(settings, namespace, key))
    elif mode == "stampede":
        concurrency, counter, go = rest
        asyncio.run(stampede(settings, namespace, key, int(concurrency), counter, go))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
