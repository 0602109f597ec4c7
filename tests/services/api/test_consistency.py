"""The consistency checker: concurrent writers and readers (some loading slowly across
writes) on two API instances with L1s, the outbox relay and the invalidation consumer in
another process. Once writes stop and the consumer caught up, no cache entry — in Redis
or in either L1 — may hold a version older than the database.

Also measured (printed; run with ``-s``): the stale window, from a write's commit
(its response) to the invalidation of that version being published — after which Redis
holds a tombstone (refusing older fills) and every subscribed L1 has evicted the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from runtime import Settings
from services import item_key
from services.api import ApiConfig
from services.api.resources import ApiResources
from services.cache import Versioned, cache_redis
from services.cache.entry import decode_entry
from tests.services.api.conftest import RunningApi, pipeline_process, running_api

ENTITIES = 16
WRITERS = 4
READERS = 6
SLOW_READERS = 4
DURATION_S = 6.0
CATCH_UP_S = 60.0


@dataclass
class Write:
    key: str
    version: int
    done: float  # monotonic, when the response (hence the commit) was seen


@dataclass
class Read:
    key: str
    version: int
    started: float


@dataclass
class Run:
    writes: list[Write] = dataclasses.field(default_factory=list)
    reads: list[Read] = dataclasses.field(default_factory=list)
    announced: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@pytest.mark.parametrize("direct", [False, True], ids=["consumer-only", "direct-and-consumer"])
def test_no_cache_entry_is_older_than_the_database_after_quiescence(
    direct: bool,
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    unique: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    # consumer-only: no direct invalidation on write, the consumer alone keeps the caches
    # honest. direct-and-consumer: the default configuration. Long L1 and item TTLs:
    # nothing may be fixed by an expiry.
    config = dataclasses.replace(
        api_config, invalidate_on_write=direct, l1_ttl_s=60.0, item_ttl_s=600.0
    )
    namespace = config.cache_namespace
    tenant = "consistency"
    base = f"/v1/tenants/{tenant}/projects"
    run = Run()
    rng = random.Random(7)

    async def probe(ready: asyncio.Event) -> None:
        client = cache_redis(stack_settings)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(f"{namespace}:invalidations")
            ready.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    version, _, key = message["data"].decode().partition(" ")
                    run.announced.setdefault((key, int(version)), time.monotonic())
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    def announced_at(key: str, version: int) -> float | None:
        times = [t for (k, v), t in run.announced.items() if k == key and v >= version]
        return min(times) if times else None

    async def wait_announced(targets: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(announced_at(k, v) is not None for k, v in targets.items()):
                return
            await asyncio.sleep(0.05)
        missing = {k: v for k, v in targets.items() if announced_at(k, v) is None}
        raise AssertionError(f"invalidations never announced: {missing}")

    async def l1s_caught_up(
        apis: list[RunningApi], targets: dict[str, int], timeout: float
    ) -> None:
        """Poll until no L1 holds a version older than ``targets``, or ``timeout`` passes
        (the stale check that follows then names what is left)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(
                (held := api.resources.cache.peek_local(key)) is not None and held.version < version
                for api in apis
                for key, version in targets.items()
            ):
                return
            await asyncio.sleep(0.05)

    async def writer(apis: list[RunningApi], ids: list[str], until: float) -> None:
        while time.monotonic() < until:
            pid = rng.choice(ids)
            response = await rng.choice(apis).client.patch(
                f"{base}/{pid}", json={"description": f"d{rng.random():.6f}"}
            )
            assert response.status_code == 200, response.text
            run.writes.append(
                Write(
                    item_key(tenant, "project", pid), response.json()["version"], time.monotonic()
                )
            )
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async def reader(apis: list[RunningApi], ids: list[str], until: float) -> None:
        while time.monotonic() < until:
            pid = rng.choice(ids)
            started = time.monotonic()
            response = await rng.choice(apis).client.get(f"{base}/{pid}")
            assert response.status_code == 200, response.text
            run.reads.append(
                Read(item_key(tenant, "project", pid), response.json()["version"], started)
            )
            if rng.random() < 0.1:
                listed = await rng.choice(apis).client.get(base, params={"limit": 50})
                assert listed.status_code == 200
            await asyncio.sleep(rng.uniform(0.001, 0.005))

    async def slow_reader(apis: list[RunningApi], ids: list[str], until: float) -> None:
        """Reads the row, then stalls before filling: the write lands in between."""
        while time.monotonic() < until:
            api = rng.choice(apis)
            resources = api.resources
            pid = rng.choice(ids)

            async def load(pid: str = pid, resources: ApiResources = resources) -> Versioned:
                async with resources.read_pool.connection() as conn:
                    row = await resources.store.get(conn, tenant, uuid.UUID(pid))
                assert row is not None
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                return Versioned(row.body(), row.version)

            key = item_key(tenant, "project", pid)
            await resources.cache.get_or_load(key, load, config.item_ttl_s)

    async def body() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            apis = [
                await stack.enter_async_context(running_api(stack_settings, config))
                for _ in range(2)
            ]
            ready = asyncio.Event()
            probing = asyncio.create_task(probe(ready))
            await asyncio.wait_for(ready.wait(), 10)
            try:
                ids = []
                for n in range(ENTITIES):
                    created = await apis[0].client.post(base, json={"name": f"e{n}"})
                    assert created.status_code == 201
                    ids.append(created.json()["id"])
                # The pipeline is live (relay + consumer assigned) once creations show up.
                await wait_announced(
                    {item_key(tenant, "project", pid): 1 for pid in ids}, CATCH_UP_S
                )
                until = time.monotonic() + DURATION_S
                await asyncio.gather(
                    *(writer(apis, ids, until) for _ in range(WRITERS)),
                    *(reader(apis, ids, until) for _ in range(READERS)),
                    *(slow_reader(apis, ids, until) for _ in range(SLOW_READERS)),
                )
                final = {
                    item_key(tenant, "project", str(pid)): version
                    for pid, version in pg_conn.execute(
                        f'SELECT id, version FROM "{api_schema}".projects WHERE tenant_id = %s',
                        (tenant,),
                    ).fetchall()
                }
                quiesced = time.monotonic()
                await wait_announced(final, CATCH_UP_S)
                caught_up_s = time.monotonic() - quiesced
                # The L1 subscribers read the same messages, a moment later: wait for them
                # (bounded; the L1 TTL is 60 s, so no expiry can stand in for an eviction).
                await l1s_caught_up(apis, final, 10.0)

                stale: list[str] = []
                raw = cache_redis(stack_settings)
                try:
                    for key, version in final.items():
                        blob = await raw.get(apis[0].resources.cache.keys.entry(key))
                        entry = decode_entry(blob)
                        if entry is not None and not entry.is_tombstone and entry.version < version:
                            stale.append(f"redis {key}: {entry.version} < {version}")
                        for n, api in enumerate(apis):
                            held = api.resources.cache.peek_local(key)
                            if held is not None and held.version < version:
                                stale.append(f"L1 #{n} {key}: {held.version} < {version}")
                finally:
                    await raw.aclose()
                # And what clients get now: exactly the database's versions.
                for api in apis:
                    for pid in ids:
                        got = (await api.client.get(f"{base}/{pid}")).json()
                        if got["version"] != final[item_key(tenant, "project", pid)]:
                            stale.append(f"GET {pid}: {got['version']}")
                    page = (await api.client.get(base, params={"limit": 100})).json()
                    for item in page["items"]:
                        if item["version"] != final[item_key(tenant, "project", item["id"])]:
                            stale.append(f"list {item['id']}: {item['version']}")
                refused = sum(
                    api.metric("sidestream_cache_stale_fills_refused_total", cache=namespace)
                    for api in apis
                )
                evicted = sum(
                    api.metric(
                        "sidestream_cache_l1_evictions_total",
                        cache=namespace,
                        reason="invalidation",
                    )
                    for api in apis
                )
                return {
                    "stale": stale,
                    "refused": refused,
                    "evicted": evicted,
                    "caught_up_s": caught_up_s,
                }
            finally:
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probing

    with pipeline_process(
        stack_settings,
        schema=api_schema,
        entity_topic=config.topics["entity_changed"],
        group=unique("invalidation"),
        namespace=namespace,
    ):
        result = asyncio.run(body())

    windows = []
    for write in run.writes:
        at = announced_at(write.key, write.version)
        assert at is not None
        windows.append(max(0.0, at - write.done) * 1000)
    last_write: dict[tuple[str, int], float] = {(w.key, w.version): w.done for w in run.writes}
    stale_reads = [
        (read.started - done) * 1000
        for read in run.reads
        for (key, version), done in last_write.items()
        if key == read.key and read.version < version and read.started > done
    ]
    # Reads that began after a newer version's invalidation was announced, yet returned
    # an older version (only a message still on its way to an L1 subscriber could).
    late_reads = [
        read
        for read in run.reads
        for (key, version) in last_write
        if key == read.key
        and read.version < version
        and (at := announced_at(key, version)) is not None
        and read.started > at + 0.005
    ]
    print(
        f"\nconsistency ({'direct + consumer' if direct else 'consumer only'}): "
        f"{len(run.writes)} writes, {len(run.reads)} reads in {DURATION_S}s; "
        f"stale entries after quiescence: {len(result['stale'])}; "
        f"stale fills refused: {result['refused']:.0f}; L1 evictions: {result['evicted']:.0f}; "
        f"caught up {result['caught_up_s'] * 1000:.0f} ms after the last write\n"
        f"stale window (commit -> invalidation published) ms: "
        f"p50 {statistics.median(windows):.1f}  p99 {percentile(windows, 0.99):.1f}  "
        f"max {max(windows):.1f}\n"
        f"reads that began after a newer commit and returned an older version: "
        f"{len(stale_reads)} of {len(run.reads)}"
        + (f", at most {max(stale_reads):.1f} ms after the commit" if stale_reads else "")
        + f"; after the invalidation was announced (+5 ms): {len(late_reads)}"
    )
    assert result["stale"] == []
    assert late_reads == []
    assert len(run.writes) > 50
    assert len(run.reads) > 100
    # The slow readers did race the writes: some of their fills were refused.
    assert result["refused"] > 0
    assert result["evicted"] > 0
