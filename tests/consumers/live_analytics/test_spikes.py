"""The spike rule and alert ids (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from consumers.live_analytics import RATE_SPIKE, SpikeRule
from consumers.live_analytics.spikes import alert_id, history_from_json, history_to_json
from schemas import AnalyticsAlert, EventDeserializer, EventSerializer

NOON = 1_714_564_800.0
RULE = SpikeRule(factor=3.0, min_events=20, baseline_windows=15)


def _steady(per_minute: int, minutes: int = 15, start: float = NOON) -> dict[float, int]:
    return {start + 60 * m: per_minute for m in range(minutes)}


def _check(count: int, history: dict[float, int], *, since: float = NOON) -> AnalyticsAlert | None:
    return RULE.check(
        tenant_id="t1",
        window_start=NOON + 15 * 60,
        count=count,
        history=history,
        observed_since=since,
        producer="tests",
    )


def test_a_minute_above_k_times_the_trailing_mean_alerts() -> None:
    alert = _check(40, _steady(4))
    assert alert is not None
    assert alert.rule == RATE_SPIKE
    assert alert.tenant_id == "t1"
    assert alert.observed_count == 40
    assert alert.baseline_mean == 4.0
    assert alert.baseline_windows == 15
    assert alert.threshold_factor == 3.0
    assert alert.window_start == datetime(2024, 5, 1, 12, 15, tzinfo=UTC)
    assert alert.window_seconds == 60
    assert alert.occurred_at == datetime(2024, 5, 1, 12, 16, tzinfo=UTC)  # event time
    # Alerts round-trip through the project's Avro serializers.
    value = EventSerializer().serialize(alert, "alerts")
    assert EventDeserializer().deserialize(value, "alerts") == alert


def test_at_or_below_the_threshold_or_the_minimum_stays_silent() -> None:
    assert _check(12, _steady(4)) is None  # 12 is not > 3 x 4
    assert _check(13, _steady(4)) is None  # above the factor, below min_events
    assert _check(19, {}) is None  # silent tenant, still below min_events
    assert _check(20, {}) is not None  # a burst out of silence is a spike


def test_missing_minutes_count_as_zero_and_old_ones_do_not_count() -> None:
    history = {NOON + 14 * 60: 30, NOON - 60: 1000}  # one busy minute, one too old
    assert RULE.baseline_mean(history, NOON + 15 * 60) == 2.0
    assert _check(21, history) is not None


def test_no_alert_before_a_whole_baseline_was_watched() -> None:
    assert _check(100, {}, since=NOON + 60) is None
    assert _check(100, {}, since=NOON) is not None


def test_history_keeps_what_the_next_baseline_needs() -> None:
    history = _steady(4, minutes=20, start=NOON - 5 * 60)
    RULE.record(history, NOON + 15 * 60, 40)
    assert min(history) == NOON + 60  # the next minute's baseline starts here
    assert history[NOON + 15 * 60] == 40
    assert history_from_json(history_to_json(history)) == history
    assert history_from_json(None) == {}


def test_alert_ids_are_uuid7_and_a_function_of_tenant_rule_and_window() -> None:
    first = alert_id("t1", RATE_SPIKE, NOON, 60)
    assert first == alert_id("t1", RATE_SPIKE, NOON, 60)
    assert first != alert_id("t2", RATE_SPIKE, NOON, 60)
    assert first != alert_id("t1", RATE_SPIKE, NOON + 60, 60)
    parsed = uuid.UUID(first)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert parsed.int >> 80 == int((NOON + 60) * 1000)  # time part: the window's end
    alert = _check(40, _steady(4))
    assert alert is not None
    assert alert.event_id == alert_id("t1", RATE_SPIKE, NOON + 15 * 60, 60)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"factor": 0}, "factor"),
        ({"min_events": 0}, "min_events"),
        ({"baseline_windows": 0}, "baseline_windows"),
    ],
)
def test_bad_rules_are_refused(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SpikeRule(**fields)  # type: ignore[arg-type]
