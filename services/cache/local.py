"""The in-process L1: a small LRU with a short TTL in front of Redis.

Why not redis-py's client-side caching (RESP3 ``CLIENT TRACKING`` with ``cache_config=``)
for this? We evaluated it (redis-py 8.1) and chose our own L1 fed by explicit pub/sub:

* It exists only on the **synchronous** client; ``redis.asyncio`` has no ``cache_config``.
  These are async (FastAPI) services.
* It refuses any server that does not call itself ``redis`` >= 7.4: the local stack and
  many managed offerings run Valkey, where the connection is rejected outright.
* It caches raw replies of read-only commands per connection pool and applies
  invalidation pushes only when that connection is next used. It knows nothing of our
  versions or tombstones, so it cannot refuse a stale put (below), and entries it holds
  are the encoded blobs, decoded again on every hit.
* Hand-rolled tracking (``CLIENT TRACKING ON REDIRECT <id> BCAST PREFIX <ns>:e:`` into
  our own subscriber) would work with Valkey, but then every fill, tombstone and lock
  write also evicts every L1 in the fleet, and a message carries the key but not the
  version, so L1s could not tell an older entry (evict) from a newer one (keep).

An explicit ``PUBLISH`` of ``"<version> <key>"`` from the invalidation script (atomically
with the tombstone) carries the version, works on Redis and Valkey alike and only fires
on real invalidations. What tracking would give us that pub/sub does not: eviction when a
key changes behind the cache's back (a manual ``DEL``). Writers must go through
``invalidate``; the L1 TTL bounds the damage of one that does not.

How the L1 stays honest about versions:

* **Floors.** An invalidation for version *v* evicts entries older than *v* and leaves a
  floor *v* for the key (for one L1 TTL): a reader that fetched the old value from Redis
  just before the tombstone landed, and puts it after the message arrived, is refused.
* **Epochs.** When the subscriber (re)subscribes it flushes the L1 (messages published
  while it was disconnected are lost) and bumps the epoch. A reader captures the epoch
  before it reads Redis and its put is refused if the epoch moved meanwhile, so a value
  read before the flush cannot slip in after it.

Not thread-safe: one L1 belongs to one event loop (and to one :class:`VersionedCache`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from services.cache.entry import Entry

#: Called with ``(reason, count)`` whenever entries leave the L1 other than by expiry.
EvictionListener = Callable[[str, int], None]


class L1:
    """A bounded, short-TTL, version-aware in-process cache of entries.

    Args:
        max_entries: LRU bound; the least recently used entry goes first.
        ttl: seconds an entry (and an invalidation floor) stays; keep it short, it bounds
            staleness whenever an invalidation message is missed.
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if ttl <= 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()
        self._floors: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._epoch = 0
        self._listener: EvictionListener | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def epoch(self) -> int:
        """Changes on every :meth:`flush`; pass the value read before a Redis read to
        :meth:`put`."""
        return self._epoch

    def set_eviction_listener(self, listener: EvictionListener) -> None:
        """Wire evictions to metrics (done by :class:`VersionedCache`; one owner only)."""
        if self._listener is not None and self._listener != listener:
            raise ValueError("this L1 already belongs to another VersionedCache")
        self._listener = listener

    def get(self, name: str) -> Entry | None:
        """The live entry stored under ``name`` (and mark it recently used), or ``None``."""
        item = self._entries.get(name)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._entries[name]
            return None
        self._entries.move_to_end(name)
        return item[0]

    def put(self, name: str, entry: Entry, *, epoch: int, ttl: float | None = None) -> bool:
        """Store ``entry`` unless that would be stale; ``True`` when stored.

        Refused when the L1 was flushed since ``epoch`` was read, when an invalidation
        floor above ``entry.version`` is in force, or when a newer entry is already held.
        ``ttl`` (seconds) can only shorten the L1 TTL, e.g. to the entry's remaining life.
        """
        if epoch != self._epoch or entry.is_tombstone:
            return False
        now = self._clock()
        floor = self._floors.get(name)
        if floor is not None:
            if floor[1] <= now:
                del self._floors[name]
            elif entry.version < floor[0]:
                return False
        held = self._entries.get(name)
        if held is not None and held[1] > now and held[0].version > entry.version:
            return False
        life = self.ttl if ttl is None else min(self.ttl, ttl)
        if life <= 0:
            return False
        self._entries[name] = (entry, now + life)
        self._entries.move_to_end(name)
        evicted = 0
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            evicted += 1
        if evicted:
            self._notify("capacity", evicted)
        return True

    def invalidate(self, name: str, version: int) -> bool:
        """Evict ``name`` if it holds a version below ``version``; remember the floor.

        Returns ``True`` when an entry was evicted.
        """
        now = self._clock()
        floor = self._floors.get(name)
        if floor is not None and floor[1] > now:
            version = max(version, floor[0])
        self._floors[name] = (version, now + self.ttl)
        self._floors.move_to_end(name)
        while len(self._floors) > self.max_entries:
            # Dropping the oldest floor only re-opens a race window that closed long ago
            # (floors are kept one TTL, and the LRU order is also the age order here).
            self._floors.popitem(last=False)
        held = self._entries.get(name)
        if held is None or held[0].version >= version:
            return False
        del self._entries[name]
        self._notify("invalidation", 1)
        return True

    def flush(self, reason: str = "flush") -> int:
        """Drop everything and move the epoch; returns how many entries were dropped."""
        dropped = len(self._entries)
        self._entries.clear()
        self._floors.clear()
        self._epoch += 1
        if dropped:
            self._notify(reason, dropped)
        return dropped

    def _notify(self, reason: str, count: int) -> None:
        if self._listener is not None:
            self._listener(reason, count)
