"""The errors of the live analytics worker: one small tree under `LiveAnalyticsError`."""

from __future__ import annotations

from runtime.errors import SidestreamError

__all__ = ["LiveAnalyticsError", "SnapshotWriteError", "TopicLayoutError"]


class LiveAnalyticsError(SidestreamError):
    """Base class of every error raised by ``consumers.live_analytics``."""


class TopicLayoutError(LiveAnalyticsError):
    """The topics cannot carry live windows: one is missing, or the sources differ in
    partition count (a tenant's analytics and audit events must meet on one partition)."""

    def __init__(self, message: str, *, topics: dict[str, int | None]) -> None:
        super().__init__(message)
        self.topics = topics
        """Partition count of each topic involved, None for a missing one."""


class SnapshotWriteError(LiveAnalyticsError):
    """Final window counts could not be written to Postgres before the worker had to stop.

    The windows stay open in the tables (nothing was deleted), so the next worker writes
    them again; `rows` is how many rows the failed write held.
    """

    def __init__(self, message: str, *, rows: int) -> None:
        super().__init__(message)
        self.rows = rows
