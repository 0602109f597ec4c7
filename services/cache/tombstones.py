"""The write side: tombstones, generation bumps, and the message that evicts every L1.

Flow of one change to entity ``key``, now at version ``v``::

    writer commits v ─▶ event ─▶ invalidation consumer ─▶ cache.invalidate(key, v)
        Lua, atomically:  SET <ns>:e:key <tombstone v> PX tombstone_ttl  (unless >= v held)
                          PUBLISH <ns>:invalidations "v key"
        every process:    L1Subscriber ─▶ evict key from its L1 if older than v

A reader that loaded the entity before the commit tries to fill version < v: the fill
script refuses it while the tombstone lives, which is why the tombstone must outlive the
longest load (``tombstone_ttl_ms > loader_timeout_ms``, checked when the cache is built).
The consumer should commit its offset only after ``invalidate`` returned: it raises
:class:`~services.cache.CacheUnavailableError` when Redis is down.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.cache.entry import Entry, Kind, check_version
from services.cache.errors import CacheUnavailableError
from services.cache.keys import Keys
from services.cache.scripts import Scripts

#: What "Redis is down" looks like from redis-py: refused/reset connections, timeouts,
#: a pool with no free connection (a ConnectionError), and raw socket errors.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

#: Keys per pipeline round trip in :meth:`VersionedCache.invalidate_many`.
BATCH_SIZE = 256


def encode_message(key: str, version: int) -> bytes:
    """The pub/sub payload announcing that ``key`` is now at ``version``."""
    return f"{version} {key}".encode()


def decode_message(data: bytes) -> tuple[str, int]:
    """Inverse of :func:`encode_message`; ``ValueError`` on anything else."""
    version, sep, key = data.decode("utf-8").partition(" ")
    if not sep or not key or not version.isdigit():
        raise ValueError(f"not an invalidation message: {data[:80]!r}")
    return key, int(version)


class Invalidator:
    """Writes tombstones (one key, or pipelined batches) and bumps generations."""

    def __init__(
        self, *, redis: Redis, keys: Keys, scripts: Scripts, tombstone_ttl_ms: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._tombstone_ttl_ms = tombstone_ttl_ms

    def _tombstone(self, version: int, now_ms: int) -> bytes:
        return Entry(Kind.TOMBSTONE, version, 0, now_ms + self._tombstone_ttl_ms).encode()

    async def invalidate(self, key: str, version: int, now_ms: int) -> bool:
        check_version(version)
        try:
            return await self._scripts.invalidate(
                self._keys.entry(key),
                self._tombstone(version, now_ms),
                self._tombstone_ttl_ms,
                self._keys.channel,
                encode_message(key, version),
            )
        except REDIS_DOWN as exc:
            raise CacheUnavailableError("invalidate", key, str(exc)) from exc

    async def invalidate_many(self, items: Iterable[tuple[str, int]], now_ms: int) -> list[bool]:
        batch = [(key, check_version(version)) for key, version in items]
        written: list[bool] = []
        # One round trip per BATCH_SIZE keys; non-transactional: each script is atomic on
        # its own, and a MULTI around hundreds of scripts would only block the server.
        for start in range(0, len(batch), BATCH_SIZE):
            chunk = batch[start : start + BATCH_SIZE]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, version in chunk:
                        await self._scripts.queue_invalidate(
                            pipe,
                            self._keys.entry(key),
                            self._tombstone(version, now_ms),
                            self._tombstone_ttl_ms,
                            self._keys.channel,
                            encode_message(key, version),
                        )
                    results: list[Any] = await pipe.execute()
            except REDIS_DOWN as exc:
                # Earlier chunks are written; replaying the whole batch is harmless
                # (an invalidation never lowers a version).
                raise CacheUnavailableError(
                    "invalidate_many", None, f"after {len(written)} of {len(batch)}: {exc}"
                ) from exc
            written.extend(bool(result) for result in results)
        return written

    async def generation(self, tenant: str, collection: str) -> int:
        name = self._keys.generation(tenant, collection)
        try:
            return await self._scripts.generation(name)
        except REDIS_DOWN as exc:
            raise CacheUnavailableError("generation", name, str(exc)) from exc

    async def bump_generation(self, tenant: str, collection: str) -> int:
        name = self._keys.generation(tenant, collection)
        try:
            return await self._scripts.bump_generation(name)
        except REDIS_DOWN as exc:
            raise CacheUnavailableError("bump_generation", name, str(exc)) from exc
