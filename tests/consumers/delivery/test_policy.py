"""Retry decisions: classification outcomes, backoff with full jitter, budgets, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from consumers.delivery import AttemptResult, Outcome, RetryPolicy, Verdict
from consumers.delivery.policy import parse_retry_after
from runtime.retry import Backoff

POLICY = RetryPolicy(max_attempts=5, max_age_s=3600, backoff=Backoff(base_s=1.0, cap_s=30.0))


def result(
    outcome: Outcome,
    *,
    status_code: int | None = None,
    error_class: str | None = None,
    retry_after_s: float | None = None,
) -> AttemptResult:
    return AttemptResult(
        outcome=outcome,
        started_at=datetime.now(UTC),
        latency_s=0.01,
        status_code=status_code,
        error_class=error_class,
        retry_after_s=retry_after_s,
    )


def test_sent_and_permanent_are_final() -> None:
    assert POLICY.decide(result(Outcome.SENT), attempt=1, age_s=0).verdict is Verdict.SENT
    decision = POLICY.decide(result(Outcome.PERMANENT, status_code=400), attempt=1, age_s=0)
    assert (decision.verdict, decision.reason) == (Verdict.FAILED, "permanent")


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0)])
def test_backoff_is_exponential_with_full_jitter_and_a_cap(attempt: int, ceiling: float) -> None:
    policy = RetryPolicy(max_attempts=10, max_age_s=3600, backoff=Backoff(base_s=1.0, cap_s=5.0))
    rand = random.Random(attempt)
    failure = result(Outcome.TRANSIENT, status_code=503)
    delays = [
        policy.decide(failure, attempt=attempt, age_s=0, rand=rand).delay_s for _ in range(200)
    ]
    assert all(0 <= d <= ceiling for d in delays)
    # Spread over the whole range (full jitter), not a fixed delay.
    assert max(delays) > ceiling * 0.8
    assert min(delays) < ceiling * 0.2


def test_max_attempts_exhausts() -> None:
    decision = POLICY.decide(result(Outcome.TRANSIENT), attempt=5, age_s=0)
    assert (decision.verdict, decision.reason) == (Verdict.FAILED, "exhausted")
    assert POLICY.decide(result(Outcome.TRANSIENT), attempt=4, age_s=0).verdict is Verdict.RETRY


def test_a_retry_past_max_age_expires() -> None:
    throttled = result(Outcome.TRANSIENT, status_code=429, retry_after_s=120.0)
    decision = POLICY.decide(throttled, attempt=1, age_s=3500)
    assert (decision.verdict, decision.reason) == (Verdict.FAILED, "expired")
    assert POLICY.decide(throttled, attempt=1, age_s=60).delay_s == 120.0


def test_retry_after_is_honoured_and_clamped() -> None:
    policy = RetryPolicy(
        max_attempts=5, max_age_s=1e6, backoff=Backoff(0.01, 0.01), max_retry_after_s=600
    )
    asked = result(Outcome.TRANSIENT, status_code=429, retry_after_s=7.0)
    assert policy.decide(asked, attempt=1, age_s=0).delay_s == 7.0
    greedy = result(Outcome.TRANSIENT, status_code=429, retry_after_s=86_400.0)
    assert policy.decide(greedy, attempt=1, age_s=0).delay_s == 600


def test_spent_budget_before_an_attempt() -> None:
    assert POLICY.spent(attempt=5, age_s=0) is None
    assert POLICY.spent(attempt=6, age_s=0) == "exhausted"
    assert POLICY.spent(attempt=1, age_s=3601) == "expired"


def test_parse_retry_after() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0
    )
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_which_failures_count_against_a_circuit() -> None:
    assert result(Outcome.TRANSIENT, status_code=503).endpoint_failed
    assert result(Outcome.TRANSIENT, error_class="timeout").endpoint_failed
    assert not result(Outcome.TRANSIENT, status_code=429).endpoint_failed
    assert not result(Outcome.PERMANENT, status_code=400).endpoint_failed
