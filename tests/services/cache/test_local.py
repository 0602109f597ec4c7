"""The L1 on its own: LRU bound, TTL, version floors and flush epochs (no Redis)."""

from __future__ import annotations

import pytest

from services.cache import L1
from services.cache.entry import Entry, Kind
from tests.support.clocks import FakeClock


def entry(version: int, payload: bytes = b"v") -> Entry:
    return Entry(Kind.BYTES, version, 0, 0, payload)


def test_lru_bound_evicts_the_least_recently_used_and_reports_it() -> None:
    evictions: list[tuple[str, int]] = []
    l1 = L1(max_entries=2, ttl=10)
    l1.set_eviction_listener(lambda reason, count: evictions.append((reason, count)))
    assert l1.put("a", entry(1), epoch=l1.epoch)
    assert l1.put("b", entry(1), epoch=l1.epoch)
    assert l1.get("a") is not None  # a is now the most recently used
    assert l1.put("c", entry(1), epoch=l1.epoch)
    assert l1.get("b") is None
    assert l1.get("a") is not None
    assert l1.get("c") is not None
    assert len(l1) == 2
    assert evictions == [("capacity", 1)]


def test_entries_expire_after_the_ttl_or_the_given_shorter_life() -> None:
    clock = FakeClock()
    l1 = L1(ttl=2.0, clock=clock)
    l1.put("a", entry(1), epoch=0)
    l1.put("b", entry(1), epoch=0, ttl=0.5)
    l1.put("c", entry(1), epoch=0, ttl=60)  # cannot extend beyond the L1 TTL
    clock.now += 0.6
    assert l1.get("b") is None
    assert l1.get("a") is not None
    clock.now += 1.5
    assert l1.get("a") is None
    assert l1.get("c") is None
    assert not l1.put("d", entry(1), epoch=0, ttl=0)  # already expired upstream


def test_invalidation_evicts_older_versions_only() -> None:
    l1 = L1()
    l1.put("old", entry(1), epoch=0)
    l1.put("same", entry(5), epoch=0)
    assert l1.invalidate("old", 2)
    assert not l1.invalidate("same", 5)
    assert l1.get("old") is None
    held = l1.get("same")
    assert held is not None
    assert held.version == 5


def test_a_floor_refuses_a_late_put_of_an_older_version_until_it_expires() -> None:
    # The race it closes: a reader fetched v1 from Redis, the invalidation for v2 was
    # processed, then the reader puts v1.
    clock = FakeClock()
    l1 = L1(ttl=1.0, clock=clock)
    l1.invalidate("k", 2)
    assert not l1.put("k", entry(1), epoch=0)
    assert l1.put("k", entry(2), epoch=0)
    l1.invalidate("k", 1)  # an out-of-order, older invalidation does not lower the floor
    assert l1.get("k") is not None
    clock.now += 1.5
    assert l1.put("x", entry(1), epoch=0)
    l1.invalidate("x", 3)
    clock.now += 1.5  # the floor has expired
    assert l1.put("x", entry(1), epoch=0)


def test_a_newer_entry_is_not_replaced_by_an_older_one_and_tombstones_are_not_held() -> None:
    l1 = L1()
    l1.put("k", entry(3, b"new"), epoch=0)
    assert not l1.put("k", entry(2, b"old"), epoch=0)
    held = l1.get("k")
    assert held is not None
    assert held.payload == b"new"
    assert not l1.put("t", Entry(Kind.TOMBSTONE, 9, 0, 0), epoch=0)


def test_flush_drops_everything_and_refuses_puts_read_before_it() -> None:
    evictions: list[tuple[str, int]] = []
    l1 = L1()
    l1.set_eviction_listener(lambda reason, count: evictions.append((reason, count)))
    before = l1.epoch
    l1.put("a", entry(1), epoch=before)
    l1.put("b", entry(1), epoch=before)
    assert l1.flush("resubscribe") == 2
    assert len(l1) == 0
    assert not l1.put("c", entry(1), epoch=before)  # read from Redis before the flush
    assert l1.put("c", entry(1), epoch=l1.epoch)
    assert evictions == [("resubscribe", 2)]


def test_bad_settings_and_a_second_owner_are_rejected() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        L1(max_entries=0)
    with pytest.raises(ValueError, match="ttl"):
        L1(ttl=0)
    l1 = L1()
    l1.set_eviction_listener(lambda reason, count: None)
    with pytest.raises(ValueError, match="another"):
        l1.set_eviction_listener(lambda reason, count: None)
