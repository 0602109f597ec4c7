"""What one attempt's result means, and what happens next: sent, retry later, or give up.

Classification (the channels apply it when they build an :class:`AttemptResult`):

* HTTP 2xx → sent. 408 and 429 → transient. Other 4xx → permanent (the request itself is
  wrong; sending it again cannot help). 3xx → permanent (redirects are not followed: a
  webhook URL that moved must be updated). 5xx, timeouts, connection errors → transient.
* SMTP 2xx → sent; 4xx replies → transient; 5xx replies → permanent, except an
  authentication failure, which is our configuration (transient: fixed by an operator);
  timeouts, disconnects, connection errors → transient.

The decision (:meth:`RetryPolicy.decide`): a transient failure is retried after
exponential backoff with full jitter — or after ``Retry-After`` when the destination sent
one — unless the budget is spent: ``max_attempts`` attempts, or a retry that would start
after ``max_age_s``. A spent budget fails the notification as ``exhausted`` / ``expired``.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from runtime.retry import Backoff


class Outcome(enum.StrEnum):
    """How one attempt ended (the ``outcome`` column of ``notification_attempts``)."""

    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    ABANDONED = "abandoned"  # the worker died before recording a result


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptResult:
    """What a channel observed during one attempt."""

    outcome: Outcome
    started_at: datetime
    latency_s: float
    status_code: int | None = None
    """HTTP status, or SMTP reply code."""
    reply: str | None = None
    """SMTP reply text (webhook reply bodies are never kept: only the status code)."""
    error_class: str | None = None
    """Short, stable category: ``timeout``, ``connect``, ``http_5xx``, ``smtp_4xx``, …"""
    error: str | None = None
    retry_after_s: float | None = None
    """The destination's ``Retry-After``, in seconds, when it sent one."""

    @property
    def endpoint_failed(self) -> bool:
        """Does this count against the destination's circuit breaker? Only failures that
        say the endpoint is unhealthy do: 5xx, timeouts, connection errors."""
        return self.outcome is Outcome.TRANSIENT and self.status_code not in (408, 429)

    def describe(self) -> str:
        """One line for ``last_error``."""
        parts = [self.error_class or self.outcome.value]
        if self.status_code is not None:
            parts.append(str(self.status_code))
        if self.error:
            parts.append(self.error)
        elif self.reply:
            parts.append(self.reply)
        return ": ".join(parts)[:1000]


class Stopwatch:
    """Times one attempt from its start and builds its :class:`AttemptResult`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()
        self.started_at = datetime.now(UTC)

    def result(
        self,
        outcome: Outcome,
        *,
        status_code: int | None = None,
        reply: str | None = None,
        error_class: str | None = None,
        error: str | None = None,
        retry_after_s: float | None = None,
    ) -> AttemptResult:
        return AttemptResult(
            outcome=outcome,
            started_at=self.started_at,
            latency_s=self._clock() - self._t0,
            status_code=status_code,
            reply=reply,
            error_class=error_class,
            error=error,
            retry_after_s=retry_after_s,
        )


class Verdict(enum.StrEnum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    delay_s: float = 0.0
    """Until the next attempt (``RETRY`` only)."""
    reason: str | None = None
    """Why it failed: ``permanent``, ``exhausted`` or ``expired`` (``FAILED`` only)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff, attempt budget and age budget of a notification."""

    max_attempts: int
    max_age_s: float
    backoff: Backoff
    max_retry_after_s: float = 3600.0

    def decide(
        self,
        result: AttemptResult,
        *,
        attempt: int,
        age_s: float,
        rand: random.Random | None = None,
    ) -> Decision:
        """The next step after attempt number ``attempt`` (1-based, within the budget) of
        a notification whose budget started ``age_s`` seconds ago."""
        if result.outcome is Outcome.SENT:
            return Decision(Verdict.SENT)
        if result.outcome is Outcome.PERMANENT:
            return Decision(Verdict.FAILED, reason="permanent")
        if attempt >= self.max_attempts:
            return Decision(Verdict.FAILED, reason="exhausted")
        if result.retry_after_s is not None:
            delay = min(max(0.0, result.retry_after_s), self.max_retry_after_s)
        else:
            delay = self.backoff.delay(attempt - 1, rand)
        if age_s + delay > self.max_age_s:
            return Decision(Verdict.FAILED, reason="expired")
        return Decision(Verdict.RETRY, delay_s=delay)

    def spent(self, *, attempt: int, age_s: float) -> str | None:
        """Before attempt ``attempt``: ``exhausted``/``expired`` if it must not start.

        Attempts of crashed workers count, so a notification that kills its worker every
        time still ends."""
        if attempt > self.max_attempts:
            return "exhausted"
        if age_s > self.max_age_s:
            return "expired"
        return None


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent
    or unreadable (then the normal backoff applies)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
