"""The L1 while its eviction channel is down: a private Redis restarted under reads.

A writer process updates a row in Postgres and invalidates it through Redis (as the API
does); this process reads it through a cache with an L1 and an L1Subscriber. Redis is
stopped and started again in the middle. Every read is checked against the writes that
committed before it started (``time.monotonic`` is one clock for every process here).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools.localstack.redis import RedisServer
from runtime import Settings, new_registry
from services.cache import L1, L1Subscriber, Versioned, VersionedCache, cache_redis

WRITER = """
import asyncio, sys, time
import psycopg
from runtime import load_settings, new_registry
from services.cache import VersionedCache, cache_redis

async def main(schema: str, seconds: float) -> None:
    settings = load_settings()
    client = cache_redis(settings)
    cache = VersionedCache(redis=client, namespace="outage", registry=new_registry())
    with psycopg.connect(settings.postgres_dsn.get_secret_value(), autocommit=True) as conn:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            version = conn.execute(
                f"UPDATE {schema}.truth SET v = v + 1 RETURNING v"
            ).fetchone()[0]
            print(f"{version} {time.monotonic():.6f}", flush=True)
            try:
                await cache.invalidate("k", version)
            except Exception:
                pass  # best effort, as in the API; Redis may be down
            await asyncio.sleep(0.005)
    await client.aclose()

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_read_is_served_from_l1_while_the_subscription_is_down(
    stack_settings: Settings,
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
    tmp_path: Path,
) -> None:
    server = RedisServer(stack_dir=tmp_path, port=_free_port())
    settings = stack_settings.with_overrides(redis_url=f"redis://127.0.0.1:{server.port}/0")
    pg_conn.execute(
        sql.SQL("CREATE TABLE {}.truth (k text PRIMARY KEY, v bigint NOT NULL)").format(
            sql.Identifier(pg_schema)
        )
    )
    pg_conn.execute(
        sql.SQL("INSERT INTO {}.truth VALUES ('k', 1)").format(sql.Identifier(pg_schema))
    )
    server.start()
    env = {
        **os.environ,
        "SIDESTREAM_REDIS_URL": settings.redis_url.get_secret_value(),
        "SIDESTREAM_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
    }
    reads: list[tuple[float, int, bool]] = []  # (started, version, served from the L1)
    events: dict[str, float] = {}

    async def body() -> None:
        client = cache_redis(settings)
        registry = new_registry()
        cache = VersionedCache(redis=client, namespace="outage", registry=registry, l1=L1(ttl=2.0))
        lost, back = cache.suspend_local, cache.resume_local

        def on_lost(reason: str) -> None:
            if reason == "subscription_lost":
                events.setdefault("noticed", time.monotonic())
            lost(reason)

        def on_back() -> None:
            if "noticed" in events:
                events.setdefault("resubscribed", time.monotonic())
            back()

        cache.suspend_local = on_lost  # type: ignore[method-assign]
        cache.resume_local = on_back  # type: ignore[method-assign]
        conn = await psycopg.AsyncConnection.connect(
            settings.postgres_dsn.get_secret_value(), autocommit=True
        )
        query = sql.SQL("SELECT v FROM {}.truth WHERE k = 'k'").format(sql.Identifier(pg_schema))

        async def load() -> Versioned:
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            return Versioned(row[0], row[0])

        def l1_hits() -> float:
            value = registry.get_sample_value(
                "sidestream_cache_hits_total", {"cache": "outage", "layer": "l1"}
            )
            return value or 0.0

        async def outage() -> None:
            events["stop"] = time.monotonic()
            await asyncio.to_thread(server.stop)
            events["stopped"] = time.monotonic()
            await asyncio.sleep(1.5)
            await asyncio.to_thread(server.start)
            events["started"] = time.monotonic()

        try:
            async with L1Subscriber(cache, max_backoff=0.5) as subscriber:
                assert await subscriber.wait_subscribed(10)
                end = time.monotonic() + 8
                # The outage runs beside the reads, so reads go on while Redis is down: run
                # inline, it left no read between "noticed" and "resubscribed" whenever the
                # subscriber was back before `start` returned (a loaded machine).
                fault: asyncio.Task[None] | None = None
                while time.monotonic() < end:
                    now = time.monotonic()
                    if fault is None and now > end - 6:
                        fault = asyncio.create_task(outage())
                    before = l1_hits()
                    value = await cache.get_or_load("k", load, 60)
                    assert value is not None
                    reads.append((now, value.version, l1_hits() > before))
                    await asyncio.sleep(0.001)
                assert fault is not None
                await fault
                assert await subscriber.wait_subscribed(10)
        finally:
            await conn.close()
            await client.aclose()

    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, pg_schema, "9"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        asyncio.run(body())
        out, _ = writer.communicate(timeout=60)
    finally:
        writer.kill()
        server.stop()
    commits = [(float(t), int(v)) for v, t in (line.split() for line in out.splitlines())]
    assert len(commits) > 100
    assert "noticed" in events, events
    assert "resubscribed" in events, events

    def truth_at(moment: float) -> int:
        return max((v for t, v in commits if t < moment), default=1)

    noticed, resubscribed = events["noticed"], events["resubscribed"]
    during = [r for r in reads if noticed <= r[0] < resubscribed]
    assert during, "no reads while the subscription was down"
    assert [r for r in reads if r[2]], "the L1 never served: the test could not fail"
    assert not [r for r in during if r[2]], "served from the L1 while the channel was down"

    def age(started: float, version: int) -> float:
        """How long before the read a newer version had committed (0: not stale)."""
        newer = [t for t, v in commits if v > version and t < started]
        return started - min(newer) if newer else 0.0

    stop = events["stop"]
    outage = [(t, age(t, v), l1) for t, v, l1 in reads if stop <= t < resubscribed]
    normal = [(t, age(t, v), l1) for t, v, l1 in reads if t < stop or t >= resubscribed + 1]
    worst_outage = max((a for _t, a, l1 in outage if l1), default=0.0)
    worst_normal = max((a for _t, a, l1 in normal if l1), default=0.0)
    print(
        f"\nredis stop→noticed {(noticed - stop) * 1000:.1f} ms "
        f"(stop() returned after {(events['stopped'] - stop) * 1000:.1f} ms), "
        f"L1 off for {(resubscribed - noticed):.2f} s; reads {len(reads)}, "
        f"{len(during)} while off (0 from L1); stale L1 reads: in the outage "
        f"{sum(1 for _t, a, l1 in outage if l1 and a > 0)} (oldest {worst_outage * 1000:.1f} ms), "
        f"otherwise {sum(1 for _t, a, l1 in normal if l1 and a > 0)} "
        f"(oldest {worst_normal * 1000:.1f} ms: a message in flight)"
    )
    # Stale L1 reads in the outage can only come before the subscriber noticed the drop.
    assert all(t < noticed for t, a, l1 in outage if l1 and a > 0)
