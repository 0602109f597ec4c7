"""Skipping Redis for a moment after it failed, so an outage costs one timeout per
window (``outage_backoff_ms``), not one per request; reads go through the loader meanwhile.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


class OutageWindow:
    """Whether a cache skips Redis now, and the one warning per window that says so."""

    def __init__(self, *, namespace: str, outage_backoff_ms: int) -> None:
        self._namespace = namespace
        self._outage_backoff = outage_backoff_ms / 1000
        self._suspended_until = 0.0  # time.monotonic(); Redis is skipped before it

    def suspended(self) -> bool:
        """Whether Redis is being skipped (a failure was noted less than a window ago)."""
        return time.monotonic() < self._suspended_until

    def note(self, operation: str, exc: BaseException) -> None:
        """Redis failed during ``operation``: skip it for the next window (warns once)."""
        if not self.suspended():
            logger.warning(
                "cache %s: Redis unreachable during %s (%s); reading through the loader "
                "for %.0f ms",
                self._namespace,
                operation,
                exc,
                self._outage_backoff * 1000,
            )
        self._suspended_until = time.monotonic() + self._outage_backoff
