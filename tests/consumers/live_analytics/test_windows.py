"""Window arithmetic on event time (pure)."""

from __future__ import annotations

import pytest

from consumers.live_analytics import HOPPING_5M, TUMBLING_1M, WindowSpec
from consumers.live_analytics.windows import closed_through, minute_of

NOON = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def test_a_window_is_final_once_the_stream_time_passed_its_end_by_the_grace() -> None:
    assert closed_through(NOON + 3 * 60 + 20, grace_s=10) == NOON + 3 * 60
    assert closed_through(NOON + 3 * 60 + 5, grace_s=10) == NOON + 2 * 60
    assert closed_through(NOON + 60, grace_s=0) == NOON + 60
    assert TUMBLING_1M.is_final(NOON + 2 * 60, NOON + 3 * 60)
    assert not TUMBLING_1M.is_final(NOON + 3 * 60, NOON + 3 * 60)
    assert HOPPING_5M.is_final(NOON - 2 * 60, NOON + 3 * 60)
    assert not HOPPING_5M.is_final(NOON - 60, NOON + 3 * 60)


def test_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="grace_s"):
        closed_through(NOON, grace_s=-1)


def test_the_current_window_holds_the_moment_and_ends_soonest() -> None:
    moment = NOON + 3 * 60 + 20
    assert minute_of(moment) == NOON + 3 * 60
    assert TUMBLING_1M.latest_start(moment) == NOON + 3 * 60
    assert HOPPING_5M.latest_start(moment) == NOON - 60  # [11:59, 12:04) holds 12:03:20


def test_faust_windows_match_the_spec() -> None:
    moment = NOON + 3 * 60 + 20
    starts = [r[0] for r in HOPPING_5M.faust_window().ranges(moment)]
    assert starts == [NOON + m * 60 for m in (-1, 0, 1, 2, 3)]
    assert [r[0] for r in TUMBLING_1M.faust_window().ranges(moment)] == [NOON + 180]


@pytest.mark.parametrize(("size", "step"), [(90, 60), (30, 30), (300, 120)])
def test_windows_must_be_whole_minutes_starting_every_minute(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="windows start every 60 s"):
        WindowSpec("x", size, step)
