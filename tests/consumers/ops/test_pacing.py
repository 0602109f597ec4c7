"""The rate limiter paces by booking slots; a fake clock shows the schedule."""

from __future__ import annotations

import pytest

from consumers.ops.pacing import MAX_PAUSE_S, RateLimiter, paced_batch_size
from tests.support.clocks import FakeTime


def test_the_first_batch_passes_and_later_ones_wait_for_their_slot() -> None:
    fake = FakeTime()
    limiter = RateLimiter(100, clock=fake.clock, sleep=fake.sleep)
    assert limiter.acquire(50) == 0
    assert limiter.acquire(50) == pytest.approx(0.5)
    assert limiter.acquire(100) == pytest.approx(0.5)
    # 200 records admitted over 1.0 s of waiting plus the last booking: 100/s on average.
    assert fake.now == pytest.approx(101.0)


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    fake = FakeTime()
    limiter = RateLimiter(10, clock=fake.clock, sleep=fake.sleep)
    limiter.acquire(10)
    fake.now += 60  # a long quiet spell
    assert limiter.acquire(10) == 0
    assert limiter.acquire(10) == pytest.approx(1.0)


def test_rejects_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_batches_shrink_so_one_pause_stays_short() -> None:
    assert paced_batch_size(100, 5000) == int(100 * MAX_PAUSE_S)
    assert paced_batch_size(1_000_000, 5000) == 5000
    assert paced_batch_size(0.5, 5000) == 1
