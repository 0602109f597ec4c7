"""Redis stops during traffic (a private server: the shared one is never touched):
requests keep succeeding from the database, the rate limiter fails open, the
invalidation consumer retries its batch instead of skipping it, and once Redis is back
nothing stale is served."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from devtools.localstack.redis import RedisServer
from runtime import Settings
from services import item_key
from services.api import ApiConfig
from services.cache import cache_redis
from services.cache.entry import Kind, decode_entry
from services.ratelimit import RateLimit
from tests.services.api.conftest import pipeline_process, running_api

TENANT = "outage"
BASE = f"/v1/tenants/{TENANT}/projects"


async def eventually(check: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.chaos
def test_requests_succeed_while_redis_is_down_and_nothing_stale_after(
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    unique: Any,
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
) -> None:
    server = RedisServer(stack_dir=tmp_path, port=0)
    server.start()  # port 0: any free port, kept when it restarts
    settings = stack_settings.with_overrides(redis_url=f"redis://127.0.0.1:{server.port}/0")
    config = dataclasses.replace(
        api_config, l1_ttl_s=60.0, rate_limit=RateLimit(limit=10_000, window_s=60.0)
    )

    async def entries(keys: list[str], namespace: str) -> list[tuple[Kind, int] | None]:
        client = cache_redis(settings)
        try:
            found = []
            for key in keys:
                entry = decode_entry(await client.get(f"{namespace}:e:{key}"))
                found.append(None if entry is None else (entry.kind, entry.version))
            return found
        finally:
            await client.aclose()

    async def body() -> None:
        async with running_api(settings, config) as api, running_api(settings, config) as peer:
            statuses: list[int] = []
            stop_traffic = asyncio.Event()
            ids: list[str] = []

            async def traffic() -> None:
                # Background readers through every phase: none may fail.
                while not stop_traffic.is_set():
                    for pid in list(ids):
                        statuses.append((await api.client.get(f"{BASE}/{pid}")).status_code)
                    statuses.append((await api.client.get(BASE)).status_code)
                    await asyncio.sleep(0.01)

            for n in range(5):
                ids.append((await api.client.post(BASE, json={"name": f"o{n}"})).json()["id"])
            keys = [item_key(TENANT, "project", pid) for pid in ids]
            ns = config.cache_namespace

            # The consumer is live once the creations' invalidations reach Redis.
            async def consumer_live() -> bool:
                return all(e is not None for e in await entries(keys, ns))

            await eventually(consumer_live, "the consumer to invalidate the creations")
            reading = asyncio.create_task(traffic())
            await asyncio.sleep(0.3)  # caches warm: Redis and the L1 hold version 1
            # A second process that only reads: its L1 holds version 1 too.
            for pid in ids:
                assert (await peer.client.get(f"{BASE}/{pid}")).json()["version"] == 1

            server.stop()
            outage: list[httpx.Response] = []
            for pid in ids:
                outage.append(
                    await api.client.patch(f"{BASE}/{pid}", json={"description": "during"})
                )
            outage.append(await api.client.post(BASE, json={"name": "born-in-outage"}))
            reads = [await api.client.get(f"{BASE}/{pid}") for pid in ids]
            listed = await api.client.get(BASE)
            assert [r.status_code for r in outage] == [200] * 5 + [201]
            # This process evicted its own L1 on write even without Redis: it reads v2.
            assert [r.json()["version"] for r in reads] == [2] * 5
            assert len(listed.json()["items"]) == 6
            assert (
                api.metric(
                    "sidestream_ratelimit_decisions_total",
                    limiter=config.producer,
                    outcome="fail_open",
                )
                > 0
            )
            assert api.metric("sidestream_cache_degraded_reads_total", cache=ns) > 0
            await asyncio.sleep(1.0)  # the consumer keeps failing (and retrying) meanwhile
            stop_traffic.set()
            await reading  # nothing reads while Redis comes back: see below

            # The peer cannot learn of the outage writes, but its subscriber saw the
            # connection drop: its L1 stopped serving at once, so it reads version 2 from
            # Postgres, not version 1 from its L1 (issue 13: no stale L1 during an outage).
            assert peer.resources.cache.l1_live is False
            assert (await peer.client.get(f"{BASE}/{ids[0]}")).json()["version"] == 2

            subscribers = [api.resources.subscriber, peer.resources.subscriber]
            before = [s.subscriptions for s in subscribers if s is not None]
            server.start()  # empty: the local server persists nothing

            async def back() -> bool:
                now = [s.subscriptions for s in subscribers if s is not None]
                return all(a > b for a, b in zip(now, before, strict=True))

            # Resubscribing flushes each L1 (messages sent while it was away are lost).
            await eventually(back, "the L1 subscriptions to come back")

            # Redis came back empty and nobody reads: only the consumer can write the
            # version-2 tombstones, by retrying the batch it failed during the outage.
            async def retried() -> bool:
                return await entries(keys, ns) == [(Kind.TOMBSTONE, 2)] * len(keys)

            await eventually(retried, "the consumer to retry the outage batch")

            final = dict(
                pg_conn.execute(
                    f'SELECT id::text, version FROM "{api_schema}".projects WHERE tenant_id = %s',
                    (TENANT,),
                ).fetchall()
            )
            for pid, key, found in zip(ids, keys, await entries(keys, ns), strict=True):
                assert found is not None, key
                assert found[1] >= final[pid], (key, found)
                for instance in (api, peer):
                    held = instance.resources.cache.peek_local(key)
                    assert held is None or held.version >= final[pid]
                    got = await instance.client.get(f"{BASE}/{pid}")
                    assert got.json()["version"] == final[pid] == 2
            for instance in (api, peer):
                page = (await instance.client.get(BASE)).json()
                assert {i["id"]: i["version"] for i in page["items"]} == final
            assert statuses
            assert set(statuses) == {200}, sorted(set(statuses))

    try:
        with pipeline_process(
            settings,
            schema=api_schema,
            entity_topic=config.topics["entity_changed"],
            group=unique("invalidation"),
            namespace=config.cache_namespace,
        ):
            asyncio.run(body())
    finally:
        server.stop()
