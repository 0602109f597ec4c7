"""How Sidestream writes a moment as text: RFC 3339 in UTC with a ``Z`` (the API's
documents, the live-analytics views)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utc_text"]


def utc_text(moment: datetime) -> str:
    """``moment`` (timezone-aware) as ``2026-12-02T09:31:35.123456Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
