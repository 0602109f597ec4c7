"""Another process with an L1 on the API's cache namespace (a script, not collected):
measures when invalidations evict its entries.

l1_peer.py REDIS_URL NAMESPACE
    Prints READY once subscribed. Then, per line on stdin ``LOAD <key>``: reads the key
    from Redis into its L1 and prints ``HELD <version>``; whenever an invalidation evicts
    an entry it prints ``EVICTED <version> <time.monotonic()>`` (CLOCK_MONOTONIC is one
    clock for every process of the machine).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pydantic import SecretStr

from runtime import Settings, new_registry
from services.cache import L1, L1Subscriber, Versioned, VersionedCache, cache_redis


class TimedL1(L1):
    def invalidate(self, name: str, version: int) -> bool:
        evicted = super().invalidate(name, version)
        if evicted:
            print(f"EVICTED {version} {time.monotonic():.6f}", flush=True)
        return evicted


async def main(url: str, namespace: str) -> None:
    client = cache_redis(Settings(redis_url=SecretStr(url)))
    cache = VersionedCache(
        redis=client, namespace=namespace, registry=new_registry(), l1=TimedL1(ttl=60)
    )

    async def not_in_redis() -> Versioned:
        raise LookupError("the key must be in Redis before LOAD")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with L1Subscriber(cache) as subscriber:
        if not await subscriber.wait_subscribed(10):
            raise SystemExit("not subscribed")
        print("READY", flush=True)
        while line := (await reader.readline()).decode().strip():
            _, key = line.split(" ", 1)
            held = await cache.get_or_load(key, not_in_redis, 60)
            print(f"HELD {held.version if held else -1}", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
