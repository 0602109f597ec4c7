"""The fill lock: one per cache entry, so that one process at a time loads a missing entry
(the others wait for its fill, up to ``waiter_max_wait_ms``). It expires after
``lock_ttl_ms``, which frees the lock of a crashed winner.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError

from services.cache.tombstones import REDIS_DOWN

logger = logging.getLogger(__name__)


def fill_lock(redis: Redis, name: str, ttl: float) -> Lock:
    """The lock named ``name`` (the entry's lock key), held for at most ``ttl`` seconds;
    acquire it with ``blocking=False``."""
    # redis-py's Lock: SET NX PX with a random token; release is a Lua
    # compare-and-delete, so an expired holder cannot free a successor's lock.
    return Lock(redis, name, timeout=ttl, blocking=False, thread_local=False)


async def release_fill_lock(lock: Lock) -> None:
    """Release ``lock``; an expired lock or an unreachable Redis is logged, not raised."""
    try:
        await lock.release()
    except LockNotOwnedError:
        logger.info(
            "cache lock %s expired before the load finished (lock_ttl_ms too short?)",
            lock.name,
        )
    except REDIS_DOWN as exc:
        # The lock expires on its own after lock_ttl_ms.
        logger.debug("could not release cache lock %s: %s", lock.name, exc)
