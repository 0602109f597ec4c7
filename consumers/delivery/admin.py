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
