"""Free C-heap memory goes back to the OS where glibc can do it, at most once per interval
after a batch and once when idle."""

from __future__ import annotations

import platform
import sys

import pytest

from runtime.memory import FreeMemoryReleaser, can_release_free_memory, release_free_memory


def test_free_memory_is_released_exactly_where_the_c_library_is_glibc() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert can_release_free_memory() is glibc
    assert release_free_memory() is glibc


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        return True


def test_batches_release_at_most_once_per_interval() -> None:
    clock, release = _Clock(), _Counter()
    releaser = FreeMemoryReleaser(1.0, release=release, clock=clock)
    releaser.after_batch()  # the first batch: nothing released yet
    assert release.calls == 1
    clock.now += 0.4
    releaser.after_batch()
    clock.now += 0.4
    releaser.after_batch()
    assert release.calls == 1
    clock.now += 0.2  # 1.0 s since the last release
    releaser.after_batch()
    assert release.calls == releaser.releases == 2


def test_going_idle_releases_only_what_batches_left_since_the_last_release() -> None:
    clock, release = _Clock(), _Counter()
    releaser = FreeMemoryReleaser(1.0, release=release, clock=clock)
    releaser.when_idle()  # nothing committed yet
    assert release.calls == 0
    releaser.after_batch()
    clock.now += 0.1
    releaser.after_batch()  # within the interval: left for the idle loop
    assert release.calls == 1
    releaser.when_idle()
    releaser.when_idle()
    assert release.calls == 2


def test_an_interval_of_zero_never_releases() -> None:
    release = _Counter()
    releaser = FreeMemoryReleaser(0, release=release, clock=_Clock())
    releaser.after_batch()
    releaser.when_idle()
    assert (release.calls, releaser.enabled) == (0, False)


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s must be >= 0"):
        FreeMemoryReleaser(-1.0)
