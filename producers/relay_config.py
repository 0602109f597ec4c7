"""`RelayConfig`: how an outbox relay claims, waits and cleans up — typed, frozen, validated
when built, with local defaults from the ``relay_*`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from runtime import Settings
from runtime.retry import Backoff
from runtime.settings import setting_default


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """How a relay claims, waits and cleans up; durations in seconds."""

    batch_size: int = setting_default("relay_batch_size")
    """Rows per transaction, at most."""
    max_keys: int = 100
    """Keys (heads) claimed per transaction: other relays take the next ones."""
    poll_interval_s: float = setting_default("relay_poll_interval_s")
    """Longest idle wait without a NOTIFY (the fallback when one is missed)."""
    delivery_timeout_s: float = setting_default("relay_delivery_timeout_s")
    """librdkafka's ``message.timeout.ms``: how long a batch (and its row locks) waits
    for Kafka before it fails and its rows stay pending."""
    retention_s: float = setting_default("relay_retention_s")
    """Sent rows are deleted this long after ``sent_at``."""
    prune_interval_s: float = 60.0
    prune_batch: int = 10_000
    metrics_interval_s: float = 5.0
    """How often the pending-rows gauges are refreshed (one COUNT query)."""
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_keys", "prune_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "poll_interval_s",
            "delivery_timeout_s",
            "prune_interval_s",
            "metrics_interval_s",
            "backoff_base_s",
            "backoff_cap_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.retention_s < 0:
            raise ValueError(f"retention_s must not be negative, got {self.retention_s}")

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> RelayConfig:
        """The ``relay_*`` settings (``SIDESTREAM_RELAY_*``), then ``changes`` on top."""
        return cls(
            **{
                "batch_size": settings.relay_batch_size,
                "poll_interval_s": settings.relay_poll_interval_s,
                "delivery_timeout_s": settings.relay_delivery_timeout_s,
                "retention_s": settings.relay_retention_s,
                **changes,
            }
        )

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter for the `attempt`-th failure in a row."""
        return Backoff(base_s=self.backoff_base_s, cap_s=self.backoff_cap_s).delay(attempt)
