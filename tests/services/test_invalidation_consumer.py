"""The invalidation consumer: its sink against the real Redis, and the worker end to end
(EntityChanged on a topic → tombstones and generation bumps; offsets in Postgres)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumers import CONSUMER_MIGRATIONS, ExitStatus, RawRecord, Record
from producers import EventPublisher
from runtime import Settings, new_registry
from runtime.migrations import migrate
from runtime.retry import is_transient
from schemas import ChangeKind, EntityChanged
from services import item_key
from services._loop import EventLoopThread
from services.cache import NotFound, Versioned, VersionedCache, cache_redis
from services.cache.entry import Kind, decode_entry
from services.errors import InvalidationUnavailableError
from services.invalidation_consumer import InvalidationSink, run_invalidation_worker


def change(tenant: str, entity_id: str, version: int, **fields: Any) -> EntityChanged:
    return EntityChanged.new(
        tenant_id=tenant,
        producer="test",
        entity_type=fields.pop("entity_type", "project"),
        entity_id=entity_id,
        version=version,
        change_kind=ChangeKind.UPDATED,
        **fields,
    )


def record(event: EntityChanged, offset: int = 0) -> Record[EntityChanged]:
    raw = RawRecord("entity", 0, offset, event.key, b"", [], 0)
    return Record(raw, event)


class CacheOnThread:
    """A cache built on an EventLoopThread, as the worker builds it."""

    def __init__(self, settings: Settings, namespace: str, registry: CollectorRegistry):
        self.loop = EventLoopThread("test-cache")

        async def build() -> VersionedCache:
            return VersionedCache(
                redis=cache_redis(settings), namespace=namespace, registry=registry
            )

        self.cache = self.loop.run(build(), timeout=5)

    def run(self, coro: Any) -> Any:
        return self.loop.run(coro, timeout=10)

    def entry(self, key: str) -> tuple[Kind, int] | None:
        """The kind and version Redis holds for ``key``."""

        async def get() -> bytes | None:
            raw = await self.cache.redis.get(self.cache.keys.entry(key))
            assert raw is None or isinstance(raw, bytes)
            return raw

        entry = decode_entry(self.run(get()))
        return None if entry is None else (entry.kind, entry.version)

    def close(self) -> None:
        async def close() -> None:
            await self.cache.aclose()
            await self.cache.redis.aclose()

        self.run(close())
        self.loop.close()


def test_the_sink_tombstones_keys_bumps_generations_and_tolerates_replays(
    stack_settings: Settings, key_prefix: str
) -> None:
    registry = new_registry()
    namespace = key_prefix + "inv"
    holder = CacheOnThread(stack_settings, namespace, registry)
    cache = holder.cache
    sink = InvalidationSink(cache=cache, loop=holder.loop, registry=registry)
    try:

        async def fill(key: str, version: int) -> None:
            async def load() -> Versioned:
                return Versioned({"v": version}, version)

            await cache.get_or_load(key, load, 60)

        a, b = item_key("acme", "project", "a"), item_key("acme", "project", "b")
        holder.run(fill(a, 1))
        holder.run(fill(b, 5))
        before = holder.run(cache.generation("acme", "project"))
        assert sink.name == "invalidation"
        assert sink.event_type is EntityChanged

        old = datetime.now(UTC) - timedelta(seconds=2)
        batch = [
            record(change("acme", "a", 2, occurred_at=old), 0),
            record(change("acme", "a", 3), 1),  # same key twice: the highest version wins
            record(change("acme", "b", 4), 2),  # older than what Redis holds: no tombstone
            record(change("bad:tenant", "x", 1), 3),  # names no key: skipped
        ]
        assert sink.write(batch, None) == 1  # type: ignore[arg-type]  # tx is unused
        assert holder.entry(a) == (Kind.TOMBSTONE, 3)
        assert holder.entry(b) == (Kind.JSON, 5)
        assert holder.run(cache.generation("acme", "project")) == before + 1

        # A replay changes nothing (an invalidation never lowers a version)...
        assert sink.write(batch, None) == 0  # type: ignore[arg-type]
        assert holder.entry(a) == (Kind.TOMBSTONE, 3)
        # ...and a fill older than the tombstone is refused, a fresh one accepted.
        holder.run(fill(a, 2))
        assert holder.entry(a) == (Kind.TOMBSTONE, 3)
        holder.run(fill(a, 3))
        assert holder.entry(a) == (Kind.JSON, 3)

        sample = registry.get_sample_value
        assert (
            sample(
                "sidestream_invalidation_keys_total", {"cache": namespace, "outcome": "tombstoned"}
            )
            == 1
        )
        assert (
            sample(
                "sidestream_invalidation_skipped_events_total",
                {"cache": namespace, "reason": "invalid_key"},
            )
            == 2
        )
        lag = sample("sidestream_invalidation_lag_seconds_sum", {"cache": namespace})
        assert lag is not None
        assert lag >= 2 * 2
    finally:
        holder.close()


def test_a_redis_failure_is_transient_so_the_batch_is_retried(nowhere_port: int) -> None:
    settings = Settings(redis_url=SecretStr(f"redis://127.0.0.1:{nowhere_port}/0"))
    registry = new_registry()
    holder = CacheOnThread(settings, "down", registry)
    sink = InvalidationSink(cache=holder.cache, loop=holder.loop, registry=registry)
    try:
        with pytest.raises(InvalidationUnavailableError) as caught:
            sink.write([record(change("acme", "a", 2))], None)  # type: ignore[arg-type]
        assert is_transient(caught.value)
        assert isinstance(caught.value, ConnectionError)
        assert caught.value.keys == 1
        assert (
            registry.get_sample_value(
                "sidestream_invalidation_failures_total", {"cache": "down", "reason": "unavailable"}
            )
            == 1
        )
    finally:
        holder.close()


def test_the_worker_invalidates_what_arrives_on_the_topic(
    stack_settings: Settings,
    topic: str,
    unique: Any,
    key_prefix: str,
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
) -> None:
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    namespace = key_prefix + "worker"
    group = unique("invalidation")
    registry = new_registry()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["status"] = run_invalidation_worker(
                stack_settings,
                stop=stop,
                registry=registry,
                group_id=group,
                topics=[topic],
                schema=pg_schema,
                namespace=namespace,
            )
        except BaseException as exc:
            outcome["error"] = exc

    async def seed_and_watch() -> list[tuple[Kind, int] | None]:
        client = cache_redis(stack_settings)
        cache = VersionedCache(redis=client, namespace=namespace, registry=new_registry())
        try:
            for n in range(10):

                async def load(n: int = n) -> Versioned | NotFound:
                    return Versioned(f"p{n}", 1)

                await cache.get_or_load(item_key("acme", "project", f"p{n}"), load, 60)
            publisher = EventPublisher(settings=stack_settings, registry=new_registry())
            try:
                for n in range(10):
                    publisher.publish(change("acme", f"p{n}", 2), topic=topic)
                assert publisher.flush(10) == 0
            finally:
                publisher.close()
            deadline = time.monotonic() + 30
            keys = [cache.keys.entry(item_key("acme", "project", f"p{n}")) for n in range(10)]
            while time.monotonic() < deadline:
                entries = [decode_entry(await client.get(k)) for k in keys]
                seen = [None if e is None else (e.kind, e.version) for e in entries]
                if all(s == (Kind.TOMBSTONE, 2) for s in seen):
                    return seen
                await asyncio.sleep(0.05)
            return seen
        finally:
            await client.aclose()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        seen = asyncio.run(seed_and_watch())
    finally:
        stop.set()
        thread.join(60)
    assert "error" not in outcome, outcome
    assert outcome["status"] is ExitStatus.DRAINED
    assert seen == [(Kind.TOMBSTONE, 2)] * 10
    committed = pg_conn.execute(
        f'SELECT sum(next_offset) FROM "{pg_schema}".consumer_offsets WHERE group_id = %s',
        (group,),
    ).fetchone()
    assert committed is not None
    assert committed[0] == 10
