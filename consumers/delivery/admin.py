"""Operator queries on notifications: counts, listings and manual retries.

Synchronous (psycopg ``Connection``) for the CLI (``sidestream notifications
show|retry``) and the demo's summary. The connection's search path selects the schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import class_row

from consumers.sinks.notifications import NOTIFY_CHANNEL

STATUSES = ("pending", "sending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class NotificationInfo:
    """One notification as ``sidestream notifications show`` lists it."""

    notification_id: uuid.UUID
    tenant_id: str
    channel: str
    recipient: str
    template: str
    status: str
    attempts: int
    next_attempt_at: datetime
    failure_reason: str | None
    last_error: str | None
    updated_at: datetime


def notification_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Notifications by status; every status is present (0 if none)."""
    counts = dict.fromkeys(STATUSES, 0)
    for status, count in conn.execute(
        "SELECT status, count(*) FROM notifications GROUP BY status"
    ).fetchall():
        counts[str(status)] = int(count)
    return counts


def notification_summary(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Counts by status, plus ``dead_lettered`` (failed rows on the dead-letter topic)
    and ``attempts`` (rows in ``notification_attempts``): for the demo's summary."""
    summary = notification_counts(conn)
    row = conn.execute(
        "SELECT (SELECT count(*) FROM notifications WHERE dead_lettered_at IS NOT NULL),"
        "       (SELECT count(*) FROM notification_attempts)"
    ).fetchone()
    dead_lettered, attempts = row if row is not None else (0, 0)
    summary["dead_lettered"] = int(dead_lettered)
    summary["attempts"] = int(attempts)
    return summary


def list_notifications(
    conn: psycopg.Connection[Any], status: str | None = None, limit: int = 20
) -> list[NotificationInfo]:
    """The most recently updated notifications, of one ``status`` (or all).

    Raises:
        ValueError: an unknown status or a limit below 1.
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; choose one of {', '.join(STATUSES)}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    with conn.cursor(row_factory=class_row(NotificationInfo)) as cur:
        cur.execute(
            """
            SELECT notification_id, tenant_id, channel, recipient, template, status,
                   attempts, next_attempt_at, failure_reason, last_error, updated_at
              FROM notifications
             WHERE %(status)s::text IS NULL OR status = %(status)s::text
             ORDER BY updated_at DESC, notification_id
             LIMIT %(limit)s
            """,
            {"status": status, "limit": limit},
        )
        return cur.fetchall()


def retry_failed(
    conn: psycopg.Connection[Any], ids: Collection[uuid.UUID | str] | Literal["all"]
) -> int:
    """Make failed notifications pending again, due now, with a fresh budget (max attempts
    and max age count from now; the attempt history is kept). ``ids="all"`` retries every
    failed one. Returns how many rows changed; wakes the delivery workers.

    Raises:
        ValueError: an id that is not a UUID.
    """
    if ids == "all":
        where, params = "status = 'failed'", {}
    else:
        wanted = [uuid.UUID(str(i)) for i in ids]
        if not wanted:
            return 0
        where, params = "status = 'failed' AND notification_id = ANY(%(ids)s)", {"ids": wanted}
    with conn.transaction():
        cur = conn.execute(
            f"""
            UPDATE notifications
               SET status = 'pending', next_attempt_at = now(), budget_started_at = now(),
                   budget_attempts_base = attempts, failure_reason = NULL,
                   dead_lettered_at = NULL, updated_at = now()
             WHERE {where}
            """,
            params,
        )
        changed = cur.rowcount
        if changed:
            conn.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
    return changed


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """One delivery attempt of a notification, as ``notification_attempts`` keeps it."""

    attempt: int
    worker: str
    destination: str
    started_at: datetime
    finished_at: datetime
    latency_ms: float | None
    outcome: str
    status_code: int | None
    error_class: str | None
    error: str | None


def notification_attempts(
    conn: psycopg.Connection[Any], notification_id: uuid.UUID | str
) -> tuple[NotificationInfo | None, list[AttemptInfo]]:
    """One notification and its attempt history, oldest attempt first.

    Raises:
        ValueError: an id that is not a UUID.
    """
    wanted = uuid.UUID(str(notification_id))
    with conn.cursor(row_factory=class_row(NotificationInfo)) as cur:
        cur.execute(
            """
            SELECT notification_id, tenant_id, channel, recipient, template, status,
                   attempts, next_attempt_at, failure_reason, last_error, updated_at
              FROM notifications WHERE notification_id = %s
            """,
            (wanted,),
        )
        found = cur.fetchone()
    with conn.cursor(row_factory=class_row(AttemptInfo)) as cur:
        cur.execute(
            """
            SELECT attempt, worker, destination, started_at, finished_at, latency_ms,
                   outcome, status_code, error_class, error
              FROM notification_attempts WHERE notification_id = %s ORDER BY attempt
            """,
            (wanted,),
        )
        return found, cur.fetchall()


@dataclass(frozen=True, slots=True)
class DestinationHealth:
    """Recent attempts to one destination (a webhook host or the SMTP relay).

    ``consecutive_failures`` counts the transient failures since its last success: the
    count each worker's circuit breaker opens at (breakers live in the workers' memory,
    so this is what they would conclude from the same attempts).
    """

    destination: str
    attempts: int
    sent: int
    failed: int
    p50_ms: float | None
    p95_ms: float | None
    last_at: datetime
    last_outcome: str
    consecutive_failures: int
    recent_latencies_ms: tuple[float, ...]  # newest last

    def circuit(self, failure_threshold: int) -> str:
        return "open" if self.consecutive_failures >= failure_threshold else "closed"


def destination_health(
    conn: psycopg.Connection[Any], *, hours: float = 24.0, recent: int = 30
) -> list[DestinationHealth]:
    """Per destination over the last ``hours``: attempts, outcomes, latency percentiles,
    and the last ``recent`` attempts (for the failure streak and a latency sparkline)."""
    rows = conn.execute(
        """
        SELECT destination, count(*),
               count(*) FILTER (WHERE outcome = 'sent'),
               count(*) FILTER (WHERE outcome IN ('transient', 'permanent')),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
               percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
          FROM notification_attempts
         WHERE finished_at > now() - make_interval(secs => %(secs)s)
         GROUP BY destination ORDER BY destination
        """,
        {"secs": hours * 3600},
    ).fetchall()
    latest: dict[str, list[tuple[str, datetime, float | None]]] = {}
    for destination, outcome, finished_at, latency in conn.execute(
        """
        SELECT destination, outcome, finished_at, latency_ms FROM (
            SELECT destination, outcome, finished_at, latency_ms,
                   row_number() OVER (PARTITION BY destination ORDER BY finished_at DESC) AS n
              FROM notification_attempts
             WHERE finished_at > now() - make_interval(secs => %(secs)s)) AS r
         WHERE n <= %(recent)s ORDER BY destination, finished_at DESC
        """,
        {"secs": hours * 3600, "recent": recent},
    ).fetchall():
        latest.setdefault(destination, []).append((outcome, finished_at, latency))
    found = []
    for destination, attempts, sent, failed, p50, p95 in rows:
        history = latest.get(destination, [])
        streak = 0
        for outcome, _at, _latency in history:
            if outcome != "transient":
                break
            streak += 1
        found.append(
            DestinationHealth(
                destination=destination,
                attempts=int(attempts),
                sent=int(sent),
                failed=int(failed),
                p50_ms=p50,
                p95_ms=p95,
                last_at=history[0][1],
                last_outcome=history[0][0],
                consecutive_failures=streak,
                recent_latencies_ms=tuple(
                    latency for _o, _a, latency in reversed(history) if latency is not None
                ),
            )
        )
    return found
