"""Final window counts into Postgres (``live_window_counts``), as absolute values.

Each row is ``(window_seconds, window_start, tenant_id, event_type) -> events``. The write
is an upsert that *replaces* the count, so writing a window again — after a restart, or a
replay of the topic — overwrites the row instead of adding to it. The windows closed by one
event go in one statement (``INSERT ... SELECT FROM unnest(...)``) and one transaction.

Transient database errors are retried with exponential backoff and full jitter; after
`retry_deadline_s` the writer reports not ready (``/readyz``) and keeps retrying until the
database answers or the worker is told to stop, which raises `SnapshotWriteError`. Nothing
is lost then: the windows stay open in the tables and are written by the next run. A worker
with nothing to write checks the database now and then (`SnapshotWriter.check`), so it
reports not ready during an outage too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg_pool import ConnectionPool

from consumers.live_analytics.errors import SnapshotWriteError
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from runtime.retry import Backoff, is_transient

__all__ = ["SnapshotWriter", "WindowCount"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_UPSERT = """
    INSERT INTO live_window_counts AS w
        (window_seconds, window_start, window_end, tenant_id, event_type, events)
    SELECT u.seconds, u.start, u.start + make_interval(secs => u.seconds), u.tenant, u.kind, u.n
    FROM unnest(%s::int[], %s::timestamptz[], %s::text[], %s::text[], %s::bigint[])
        AS u(seconds, start, tenant, kind, n)
    ON CONFLICT (window_seconds, tenant_id, event_type, window_start) DO UPDATE
        SET events = EXCLUDED.events, written_at = now()
"""


@dataclass(frozen=True, slots=True, order=True)
class WindowCount:
    """The final count of one window of one tenant and event type."""

    window_seconds: int
    window_start: float
    """Unix seconds (event time)."""
    tenant_id: str
    event_type: str
    events: int

    @property
    def start(self) -> datetime:
        return _EPOCH + timedelta(seconds=self.window_start)


class SnapshotWriter:
    """Writes batches of `WindowCount` through `pool` (whose search path picks the schema)."""

    def __init__(
        self,
        *,
        pool: ConnectionPool,
        metrics: LiveAnalyticsMetrics,
        backoff: Backoff | None = None,
        retry_deadline_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._retry_deadline_s = retry_deadline_s
        self._clock = clock
        self._failing_since: float | None = None

    @property
    def ready(self) -> bool:
        """False while a write has been failing for longer than the retry deadline."""
        since = self._failing_since
        return since is None or self._clock() - since < self._retry_deadline_s

    def check(self, *, timeout_s: float = 5.0) -> bool:
        """One ``SELECT 1`` through the pool: whether the database answers now.

        Run now and then while no window closes, so that ``ready`` also turns False for a
        worker with nothing to write (a failure counts from the first failed check, like
        a failed write); a success ends what was failing. The pool's own line reports
        the outage.
        """
        started = self._clock()
        try:
            with self._pool.connection(timeout=timeout_s) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, TimeoutError, ConnectionError) as exc:
            if not is_transient(exc):
                raise
            if self._failing_since is None:
                self._failing_since = started
            return False
        self._failing_since = None
        return True

    def write(self, rows: Sequence[WindowCount], *, stop: threading.Event) -> None:
        """Upsert `rows` in one transaction, retrying transient errors until `stop` is set.

        Raises `SnapshotWriteError` when `stop` is set before the write succeeded, and
        re-raises errors that retrying cannot fix.
        """
        if not rows:
            return
        # Sorted keys: writers of overlapping rows lock them in the same order.
        ordered = sorted(rows)
        params = (
            [r.window_seconds for r in ordered],
            [r.start for r in ordered],
            [r.tenant_id for r in ordered],
            [r.event_type for r in ordered],
            [r.events for r in ordered],
        )
        attempt = 0
        while True:
            started = self._clock()
            try:
                with self._pool.connection() as conn, conn.transaction():
                    conn.execute(_UPSERT, params)
            except (psycopg.Error, TimeoutError, ConnectionError) as exc:
                if not is_transient(exc):
                    raise
                if self._failing_since is None:
                    self._failing_since = started
                self._metrics.snapshot_retries.inc()
                delay = self._backoff.delay(attempt)
                attempt += 1
                if attempt == 1:  # once per write: it retries every few seconds
                    logger.warning(
                        "writing %d window counts failed (%s); retrying until the database "
                        "answers (not ready after %.0f s)",
                        len(rows),
                        " ".join(str(exc).split()),
                        self._retry_deadline_s,
                    )
                if stop.wait(delay):
                    raise SnapshotWriteError(
                        f"stopped before {len(rows)} window counts were written: {exc}",
                        rows=len(rows),
                    ) from exc
                continue
            self._failing_since = None
            self._metrics.snapshot_rows.inc(len(rows))
            self._metrics.snapshot_seconds.observe(self._clock() - started)
            return
