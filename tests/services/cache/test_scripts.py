"""The Lua set-if-newer and tombstone scripts, against the real Redis."""

from __future__ import annotations

import asyncio

import redis

from runtime import Settings
from services.cache import cache_redis
from services.cache.entry import Entry, Kind, decode_entry
from services.cache.scripts import Scripts
from services.cache.tombstones import decode_message


def value(version: int, payload: bytes = b"v") -> bytes:
    return Entry(Kind.BYTES, version, 5, 0, payload).encode()


def tombstone(version: int) -> bytes:
    return Entry(Kind.TOMBSTONE, version, 0, 0).encode()


def stored_version(redis_conn: redis.Redis, name: str) -> tuple[Kind, int] | None:
    raw = redis_conn.get(name)
    assert raw is None or isinstance(raw, bytes)
    entry = decode_entry(raw)
    return None if entry is None else (entry.kind, entry.version)


def test_fill_accepts_newer_or_equal_and_refuses_older(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    name = f"{key_prefix}e:k"

    async def body() -> list[bool]:
        client = cache_redis(stack_settings)
        try:
            scripts = Scripts(client)
            return [
                await scripts.fill(name, value(7), 10_000),
                await scripts.fill(name, value(6), 10_000),
                await scripts.fill(name, value(7, b"again"), 10_000),
                await scripts.fill(name, value(8), 10_000),
            ]
        finally:
            await client.aclose()

    assert asyncio.run(body()) == [True, False, True, True]
    assert stored_version(redis_conn, name) == (Kind.BYTES, 8)
    assert 0 < redis_conn.pttl(name) <= 10_000


def test_versions_compare_exactly_beyond_2_pow_53_and_across_the_32_bit_halves(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    # Lua numbers are doubles: 2**53 + 1 == 2**53 there. The scripts compare halves.
    pairs = [(2**53 + 1, 2**53), (2**32, 2**32 - 1), (2**64 - 1, 2**64 - 2), (2**63, 2**32)]

    async def body() -> list[tuple[bool, bool]]:
        client = cache_redis(stack_settings)
        try:
            scripts = Scripts(client)
            results = []
            for i, (high, low) in enumerate(pairs):
                name = f"{key_prefix}e:{i}"
                await scripts.fill(name, value(high), 10_000)
                results.append(
                    (
                        await scripts.fill(name, value(low), 10_000),
                        await scripts.fill(name, value(high), 10_000),
                    )
                )
            return results
        finally:
            await client.aclose()

    assert asyncio.run(body()) == [(False, True)] * len(pairs)


def test_a_tombstone_refuses_older_fills_and_yields_to_equal_or_newer(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    name, channel = f"{key_prefix}e:k", f"{key_prefix}invalidations"

    async def body() -> list[bool]:
        client = cache_redis(stack_settings)
        try:
            scripts = Scripts(client)
            results = [
                await scripts.fill(name, value(1), 10_000),
                await scripts.invalidate(name, tombstone(2), 5_000, channel, b"2 k"),
                await scripts.fill(name, value(1), 10_000),
            ]
            assert stored_version(redis_conn, name) == (Kind.TOMBSTONE, 2)
            assert 0 < redis_conn.pttl(name) <= 5_000
            results.append(await scripts.fill(name, value(2), 10_000))
            return results
        finally:
            await client.aclose()

    assert asyncio.run(body()) == [True, True, False, True]
    assert stored_version(redis_conn, name) == (Kind.BYTES, 2)


def test_an_older_or_equal_invalidation_keeps_the_entry_but_is_still_published(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    name, channel = f"{key_prefix}e:k", f"{key_prefix}invalidations"
    pubsub = redis_conn.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)

    async def body() -> list[bool]:
        client = cache_redis(stack_settings)
        try:
            scripts = Scripts(client)
            await scripts.fill(name, value(5), 10_000)
            return [
                await scripts.invalidate(name, tombstone(4), 5_000, channel, b"4 k"),
                await scripts.invalidate(name, tombstone(5), 5_000, channel, b"5 k"),
                await scripts.invalidate(name, tombstone(6), 5_000, channel, b"6 k"),
                await scripts.invalidate(name, tombstone(6), 5_000, channel, b"6 k"),
            ]
        finally:
            await client.aclose()

    try:
        assert asyncio.run(body()) == [False, False, True, False]
        received = []
        for _ in range(50):
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                received.append(decode_message(message["data"]))
            if len(received) == 4:
                break
        assert received == [("k", 4), ("k", 5), ("k", 6), ("k", 6)]
    finally:
        pubsub.close()
    assert stored_version(redis_conn, name) == (Kind.TOMBSTONE, 6)


def test_a_foreign_value_under_the_key_counts_as_absent(
    stack_settings: Settings, redis_conn: redis.Redis, key_prefix: str
) -> None:
    name = f"{key_prefix}e:k"
    redis_conn.set(name, b"written by someone else")

    async def body() -> bool:
        client = cache_redis(stack_settings)
        try:
            return await Scripts(client).fill(name, value(1), 10_000)
        finally:
            await client.aclose()

    assert asyncio.run(body())
    assert stored_version(redis_conn, name) == (Kind.BYTES, 1)
