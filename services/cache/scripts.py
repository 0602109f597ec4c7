"""The Lua scripts that make versioned writes atomic.

A version check and the write it guards must be one step on the server: between a
client's ``GET`` and its ``SET`` an invalidation could land, and the ``SET`` would put the
old value back. Scripts run atomically, so they are that one step.

The scripts read the version from the entry header (see :mod:`services.cache.entry`:
format byte, kind byte, then 8 big-endian version bytes). Lua 5.1 numbers are doubles,
exact only up to 2^53, so the 64-bit version is compared as two 32-bit halves.

The fill lock is redis-py's :class:`redis.asyncio.lock.Lock` (``SET NX PX`` with a random
token, released by a Lua compare-and-delete), so it has no script here.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

_PRELUDE = """
local function version_of(blob)
  if not blob or string.len(blob) < 22 or string.byte(blob, 1) ~= 1 then
    return nil
  end
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(blob, 3, 10)
  return ((b1 * 256 + b2) * 256 + b3) * 256 + b4, ((b5 * 256 + b6) * 256 + b7) * 256 + b8
end
local function compare(ahi, alo, bhi, blo)
  if ahi ~= bhi then
    if ahi < bhi then return -1 end
    return 1
  end
  if alo ~= blo then
    if alo < blo then return -1 end
    return 1
  end
  return 0
end
"""

# KEYS[1] entry; ARGV[1] new entry blob; ARGV[2] TTL in ms.
# Set-if-newer: refuse (0) when the current entry -- value, negative entry or tombstone --
# has a higher version; an equal or higher version replaces it (1). A blob we cannot read
# counts as absent.
FILL = (
    _PRELUDE
    + """
local nhi, nlo = version_of(ARGV[1])
local chi, clo = version_of(redis.call('GET', KEYS[1]))
if chi and compare(chi, clo, nhi, nlo) > 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
)

# KEYS[1] entry; ARGV[1] tombstone blob; ARGV[2] tombstone TTL in ms; ARGV[3] channel;
# ARGV[4] message. Replace the entry with the tombstone unless it already holds this or a
# newer version (an out-of-order or replayed invalidation must not lower the bar, and a
# value already at the new version is fresh). Publish in every case, in the same atomic
# step: another process's L1 may hold an older version even when Redis does not.
INVALIDATE = (
    _PRELUDE
    + """
local nhi, nlo = version_of(ARGV[1])
local chi, clo = version_of(redis.call('GET', KEYS[1]))
local wrote = 0
if not chi or compare(chi, clo, nhi, nlo) < 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  wrote = 1
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return wrote
"""
)

# A missing counter starts at the server's clock in microseconds, so a counter lost to
# eviction or a flush comes back *above* every generation handed out before (it had to be
# bumped once per microsecond to get ahead), and old list keys never become live again.
_INITIAL_GENERATION = """
local t = redis.call('TIME')
local g = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('SET', KEYS[1], g)
return g
"""

# KEYS[1] generation counter. Returns it, creating it if needed.
GENERATION = (
    """
local g = redis.call('GET', KEYS[1])
if g then
  return g
end
"""
    + _INITIAL_GENERATION
)

# KEYS[1] generation counter. Increments it, creating it if needed; returns the new value
# (INCR's integer reply is exact: Lua doubles hold integers up to 2^53, and microseconds
# since 1970 stay below that until the year 2255).
BUMP_GENERATION = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('INCR', KEYS[1])
end
"""
    + _INITIAL_GENERATION
)


class Scripts:
    """The scripts registered on one client (redis-py runs them by SHA, loading on NOSCRIPT)."""

    def __init__(self, redis: Redis) -> None:
        self._fill = redis.register_script(FILL)
        self._invalidate = redis.register_script(INVALIDATE)
        self._generation = redis.register_script(GENERATION)
        self._bump = redis.register_script(BUMP_GENERATION)

    async def fill(self, entry_name: str, blob: bytes, ttl_ms: int) -> bool:
        """Set-if-newer; ``False`` when a newer version (or tombstone) refused the fill."""
        return bool(await self._fill(keys=[entry_name], args=[blob, ttl_ms]))

    async def invalidate(
        self, entry_name: str, tombstone: bytes, ttl_ms: int, channel: str, message: bytes
    ) -> bool:
        """Tombstone-if-newer and publish; ``True`` when the tombstone was written."""
        return bool(
            await self._invalidate(keys=[entry_name], args=[tombstone, ttl_ms, channel, message])
        )

    async def queue_invalidate(
        self,
        pipe: Pipeline,
        entry_name: str,
        tombstone: bytes,
        ttl_ms: int,
        channel: str,
        message: bytes,
    ) -> None:
        """Queue :meth:`invalidate` on a pipeline (its result comes from ``execute``)."""
        await self._invalidate(
            keys=[entry_name], args=[tombstone, ttl_ms, channel, message], client=pipe
        )

    async def generation(self, name: str) -> int:
        return int(await self._generation(keys=[name]))

    async def bump_generation(self, name: str) -> int:
        return int(await self._bump(keys=[name]))
