"""The spike detector: a tenant whose last minute is far above its trailing mean.

When a one-minute window closes (event time), the tenant's events in it, every event type
together, are compared with its mean per minute over the `baseline_windows` minutes before
(minutes without events count as 0). The rule fires when

    count > factor * mean   and   count >= min_events

and only once the partition has been watched for the whole baseline, so a worker that
starts on old data does not alert on its first minutes. `min_events` keeps a quiet tenant
going from 1 to 4 events from alerting.

Alerts are emitted at least once; `alert_id` makes the id of an alert a function of tenant,
rule and window, so an alert emitted again after a restart is recognisably the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import AnalyticsAlert

__all__ = ["RATE_SPIKE", "SpikeRule", "alert_id", "history_from_json", "history_to_json"]

RATE_SPIKE = "rate_spike"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def alert_id(tenant_id: str, rule: str, window_start: float, window_s: int) -> str:
    """A UUIDv7-shaped id that is a function of its arguments.

    The 48-bit time field is the end of the window in milliseconds (so ids still sort by
    time); version and variant bits are set as RFC 9562 asks; the remaining 74 bits come
    from a SHA-256 of tenant, rule and window.
    """
    end_ms = round((window_start + window_s) * 1000) & ((1 << 48) - 1)
    digest = hashlib.sha256(
        f"{tenant_id}\x00{rule}\x00{window_start!r}\x00{window_s}".encode()
    ).digest()
    rand_a = int.from_bytes(digest[:2], "big") & 0xFFF
    rand_b = int.from_bytes(digest[2:10], "big") & ((1 << 62) - 1)
    value = (end_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def _moment(seconds: float) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeRule:
    """`count > factor * trailing mean` over `baseline_windows` windows of `window_s`."""

    factor: float = 3.0
    min_events: int = 20
    baseline_windows: int = 15
    window_s: int = 60

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"factor must be positive, got {self.factor}")
        if self.min_events < 1:
            raise ValueError(f"min_events must be at least 1, got {self.min_events}")
        if self.baseline_windows < 1:
            raise ValueError(f"baseline_windows must be at least 1, got {self.baseline_windows}")
        if self.window_s < 1:
            raise ValueError(f"window_s must be at least 1, got {self.window_s}")

    @property
    def baseline_s(self) -> int:
        return self.baseline_windows * self.window_s

    def baseline_mean(self, history: Mapping[float, int], window_start: float) -> float:
        """Mean count per window over the baseline before `window_start` (missing = 0)."""
        low = window_start - self.baseline_s
        total = sum(count for start, count in history.items() if low <= start < window_start)
        return total / self.baseline_windows

    def check(
        self,
        *,
        tenant_id: str,
        window_start: float,
        count: int,
        history: Mapping[float, int],
        observed_since: float,
        producer: str,
    ) -> AnalyticsAlert | None:
        """The alert for `tenant_id`'s window starting at `window_start`, or None.

        `history` holds the tenant's earlier window counts by window start; `observed_since`
        is the first window start of the partition's stream: before a whole baseline has been
        watched, the rule stays silent.
        """
        if observed_since > window_start - self.baseline_s or count < self.min_events:
            return None
        mean = self.baseline_mean(history, window_start)
        if not count > self.factor * mean:
            return None
        alert = AnalyticsAlert.new(
            tenant_id=tenant_id,
            producer=producer,
            occurred_at=_moment(window_start + self.window_s),
            rule=RATE_SPIKE,
            window_start=_moment(window_start),
            window_seconds=self.window_s,
            observed_count=count,
            baseline_mean=mean,
            baseline_windows=self.baseline_windows,
            threshold_factor=self.factor,
        )
        return dataclasses.replace(
            alert, event_id=alert_id(tenant_id, RATE_SPIKE, window_start, self.window_s)
        )

    def record(self, history: dict[float, int], window_start: float, count: int) -> None:
        """Add a closed window's count to `history` and forget what no baseline needs."""
        history[window_start] = count
        oldest = window_start + self.window_s - self.baseline_s
        for start in [start for start in history if start < oldest]:
            del history[start]


def history_to_json(history: Mapping[float, int]) -> list[list[float]]:
    """A table value for a tenant's history (JSON object keys would have to be strings)."""
    return [[start, count] for start, count in sorted(history.items())]


def history_from_json(value: Any) -> dict[float, int]:
    """The inverse of `history_to_json`; None (no history yet) gives an empty one."""
    if not value:
        return {}
    return {float(start): int(count) for start, count in value}
