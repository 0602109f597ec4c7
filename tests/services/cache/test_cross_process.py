"""Two OS processes sharing one namespace: L1 eviction and stampede protection."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import redis

from runtime import Settings, new_registry
from services.cache import VersionedCache, cache_redis

PEER = Path(__file__).with_name("cache_peer.py")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), *args, stdout=asyncio.subprocess.PIPE
    )


async def read_line(process: asyncio.subprocess.Process, timeout: float) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout)
    return line.decode().strip()


async def finish(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def test_an_invalidation_in_this_process_evicts_the_l1_of_another_process(
    stack_settings: Settings, key_prefix: str
) -> None:
    namespace = key_prefix + "c"
    url = stack_settings.redis_url.get_secret_value()

    async def body() -> None:
        peer = await spawn("l1", url, namespace, "user:7")
        try:
            assert await read_line(peer, 30) == "READY"
            client = cache_redis(stack_settings)
            try:
                cache = VersionedCache(redis=client, namespace=namespace, registry=new_registry())
                assert await cache.invalidate("user:7", 2)
            finally:
                await client.aclose()
            # The peer's L1 TTL is 60 s: only the message can evict it within 15 s.
            assert await read_line(peer, 20) == "EVICTED"
        finally:
            await finish(peer)
        assert peer.returncode == 0

    asyncio.run(body())


def test_concurrent_misses_in_four_processes_call_the_loader_once(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    namespace = key_prefix + "c"
    counter, go = f"{key_prefix}loads", f"{key_prefix}go"
    url = stack_settings.redis_url.get_secret_value()

    async def body() -> list[dict[str, object]]:
        peers = [
            await spawn("stampede", url, namespace, "hot", "250", counter, go) for _ in range(4)
        ]
        try:
            for peer in peers:
                assert await read_line(peer, 30) == "READY"
            redis_conn.set(go, 1)  # all four start together
            return [json.loads(await read_line(peer, 30)) for peer in peers]
        finally:
            for peer in peers:
                await finish(peer)

    reports = asyncio.run(body())
    assert redis_conn.get(counter) == b"1"
    values = {value for report in reports for value in report["values"]}  # type: ignore[attr-defined]
    assert len(values) == 1
    assert [report["count"] for report in reports] == [250] * 4
