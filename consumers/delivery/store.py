"""The ``notifications`` table as a work queue: claim with a lease, record, release.

Lifecycle of one notification row::

    pending ──claim──▶ sending ──record──▶ sent
       ▲                  │      └──────▶ failed ──sweep──▶ dead-letter topic
       └──── retry ───────┘  (pending again, next_attempt_at = now + backoff)

* **claim** — one statement: lock due rows (``pending`` and due, or ``sending`` with an
  expired lease) with ``FOR UPDATE SKIP LOCKED`` and set ``status = 'sending'``,
  ``claimed_by``, ``lease_until`` and ``attempts + 1`` in the same transaction. An
  expired lease means the previous worker died mid-attempt: that attempt is recorded as
  ``abandoned`` and the row is claimed again (at most one extra attempt, same
  ``Idempotency-Key``).
* **send** — outside any transaction (the worker's business, not this module's).
* **record** — the attempt row, and the row's next state, in one transaction, *fenced*:
  it only applies while ``claimed_by`` and ``attempts`` still match the claim, so a
  worker whose lease passed to another cannot overwrite the newer claim's result.
* **release** — give a claim back without an attempt (open circuit, lease too short for
  a send): ``attempts - 1``, ``pending`` again after a delay.

Unqualified table names: the connections' ``search_path`` selects the schema.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from consumers.delivery.errors import SchemaNotReadyError
from consumers.delivery.policy import AttemptResult, Decision, Outcome, Verdict

# Two index-ordered scans instead of one OR (which would sort the whole backlog): expired
# leases first (by ``notifications_leases``), then due rows (by ``notifications_due``).
_CLAIM = """
WITH expired AS MATERIALIZED (
    SELECT notification_id, status AS was_status, claimed_by AS was_claimed_by,
           attempts AS was_attempts, updated_at AS was_claimed_at, 0 AS rank, lease_until AS at
      FROM notifications
     WHERE status = 'sending' AND lease_until < now()
       AND destination <> ALL(%(exclude)s::text[])
     ORDER BY lease_until
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
),
due_pending AS MATERIALIZED (
    SELECT notification_id, status AS was_status, claimed_by AS was_claimed_by,
           attempts AS was_attempts, updated_at AS was_claimed_at, 1 AS rank,
           next_attempt_at AS at
      FROM notifications
     WHERE status = 'pending' AND next_attempt_at <= now()
       AND destination <> ALL(%(exclude)s::text[])
     ORDER BY next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
),
due AS (
    SELECT * FROM (SELECT * FROM expired UNION ALL SELECT * FROM due_pending) AS both_kinds
     ORDER BY rank, at
     LIMIT %(limit)s
),
claimed AS (
    UPDATE notifications AS n
       SET status = 'sending',
           claimed_by = %(worker)s,
           lease_until = now() + make_interval(secs => %(lease_s)s),
           attempts = n.attempts + 1,
           updated_at = now()
      FROM due
     WHERE n.notification_id = due.notification_id
 RETURNING n.notification_id, n.event_id, n.tenant_id, n.channel, n.recipient, n.template,
           n.params, n.requested_at, n.created_at, n.destination, n.attempts, n.endpoint_id,
           n.attempts - n.budget_attempts_base AS budget_attempt,
           extract(epoch FROM now() - coalesce(n.budget_started_at, n.created_at))::float8
               AS age_s,
           due.was_status, due.was_claimed_by, due.was_attempts, due.was_claimed_at
),
abandoned AS (
    -- The previous claim's worker died before recording its attempt.
    INSERT INTO notification_attempts
           (notification_id, attempt, worker, destination, started_at, finished_at,
            outcome, error_class, error)
    SELECT notification_id, was_attempts, coalesce(was_claimed_by, '?'), destination,
           was_claimed_at, now(), 'abandoned', 'lease_expired',
           'the worker did not record a result before its lease expired'
      FROM claimed
     WHERE was_status = 'sending' AND was_attempts >= 1
        ON CONFLICT (notification_id, attempt) DO NOTHING
)
SELECT c.notification_id, c.event_id, c.tenant_id, c.channel, c.recipient, c.template,
       c.params, c.requested_at, c.created_at, c.destination, c.attempts, c.budget_attempt,
       c.age_s, c.was_status = 'sending' AS reclaimed, c.endpoint_id,
       e.id IS NOT NULL AS endpoint_found, e.url AS endpoint_url,
       e.enabled AS endpoint_enabled, e.secret_sealed,
       CASE WHEN e.previous_secret_expires_at > now() THEN e.previous_secret_sealed END
           AS previous_secret_sealed
  FROM claimed AS c
  -- The tenant is part of the join: a notification can only use its own tenant's endpoint.
  LEFT JOIN webhook_endpoints AS e ON e.tenant_id = c.tenant_id AND e.id = c.endpoint_id
 ORDER BY c.notification_id
"""

# A real outcome replaces an 'abandoned' placeholder (a worker whose lease expired
# finished after all); an 'abandoned' never replaces a real outcome.
_INSERT_ATTEMPT = """
INSERT INTO notification_attempts
       (notification_id, attempt, worker, destination, started_at, finished_at, latency_ms,
        outcome, status_code, reply, error_class, error)
VALUES (%(id)s, %(attempt)s, %(worker)s, %(destination)s, %(started_at)s,
        %(finished_at)s, %(latency_ms)s, %(outcome)s, %(status_code)s, %(reply)s,
        %(error_class)s, %(error)s)
    ON CONFLICT (notification_id, attempt) DO UPDATE
   SET worker = EXCLUDED.worker, started_at = EXCLUDED.started_at,
       finished_at = EXCLUDED.finished_at, latency_ms = EXCLUDED.latency_ms,
       outcome = EXCLUDED.outcome, status_code = EXCLUDED.status_code,
       reply = EXCLUDED.reply, error_class = EXCLUDED.error_class, error = EXCLUDED.error
 WHERE notification_attempts.outcome = 'abandoned' AND EXCLUDED.outcome <> 'abandoned'
"""

_FENCE = """
 WHERE notification_id = %(id)s AND status = 'sending'
   AND claimed_by = %(worker)s AND attempts = %(attempt)s
"""

_FINISH = (
    """
UPDATE notifications
   SET status = %(status)s::text,
       next_attempt_at = CASE WHEN %(status)s::text = 'pending'
                              THEN now() + make_interval(secs => %(delay_s)s)
                              ELSE next_attempt_at END,
       sent_at = CASE WHEN %(status)s::text = 'sent' THEN now() ELSE sent_at END,
       failure_reason = %(reason)s,
       last_error = %(last_error)s,
       claimed_by = NULL, lease_until = NULL, updated_at = now()
"""
    + _FENCE
)

_RELEASE = (
    """
UPDATE notifications
   SET status = 'pending', attempts = attempts - 1,
       next_attempt_at = now() + make_interval(secs => %(delay_s)s),
       claimed_by = NULL, lease_until = NULL, updated_at = now()
"""
    + _FENCE
)

_FAIL_UNATTEMPTED = (
    """
UPDATE notifications
   SET status = 'failed', attempts = attempts - 1, failure_reason = %(reason)s,
       last_error = %(last_error)s, claimed_by = NULL, lease_until = NULL, updated_at = now()
"""
    + _FENCE
)

# The tables must be in the worker's own schema: the search path falls back to
# ``public``, and a worker must never deliver another schema's notifications.
_CHECK_SCHEMA = """
SELECT to_regclass(format('%%I.notifications', %(schema)s::text)) IS NOT NULL,
       to_regclass(format('%%I.notification_attempts', %(schema)s::text)) IS NOT NULL,
       to_regclass(format('%%I.webhook_endpoints', %(schema)s::text)) IS NOT NULL,
       EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = %(schema)s::text AND table_name = 'notifications'
                  AND column_name = 'endpoint_id')
"""

_OLDEST_UNDELIVERED = """
SELECT extract(epoch FROM now() - min(created_at))::float8
  FROM notifications WHERE status IN ('pending', 'sending')
"""

_DEAD_LETTER_BATCH = """
SELECT n.notification_id, n.event_id, n.tenant_id, n.channel, n.recipient, n.template,
       n.params, n.dedupe_key, n.requested_at, n.created_at, n.updated_at, n.attempts,
       n.failure_reason, n.last_error, n.destination,
       coalesce((SELECT jsonb_agg(to_jsonb(a) - 'notification_id' ORDER BY a.attempt)
                   FROM (SELECT * FROM notification_attempts AS x
                          WHERE x.notification_id = n.notification_id
                          ORDER BY x.attempt DESC LIMIT %(history)s) AS a),
                '[]'::jsonb) AS history
  FROM notifications AS n
 WHERE n.status = 'failed' AND n.dead_lettered_at IS NULL
 ORDER BY n.updated_at
 LIMIT %(limit)s
   FOR UPDATE OF n SKIP LOCKED
"""

_MARK_DEAD_LETTERED = """
UPDATE notifications SET dead_lettered_at = now()
 WHERE notification_id = ANY(%(ids)s) AND status = 'failed'
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Notification:
    """A claimed notification: what to send, and the claim that allows sending it."""

    notification_id: uuid.UUID
    event_id: uuid.UUID
    tenant_id: str
    channel: str
    """``EMAIL`` or ``WEBHOOK``."""
    recipient: str
    """An email address; for a webhook, the endpoint id (or, in rows written before
    endpoints existed, the URL itself)."""
    template: str
    params: Mapping[str, str]
    requested_at: datetime
    created_at: datetime
    destination: str
    """Webhook ``host[:port]`` or ``smtp``: the key of concurrency caps and circuits."""
    attempt: int
    """Number of this attempt (1-based, over the notification's life)."""
    budget_attempt: int
    """Number of this attempt within the current budget (since the last manual retry)."""
    age_s: float
    """Seconds since the current budget started, at claim time."""
    lease_deadline: float = field(compare=False)
    """The claim's end on the worker's monotonic clock (conservative: measured from
    before the claim query)."""
    reclaimed: bool = False
    """Claimed after another worker's lease expired (its attempt is ``abandoned``)."""
    endpoint: EndpointTarget | None = None
    """The webhook endpoint as it is now (``None`` for email and for old raw-URL rows)."""

    @property
    def idempotency_key(self) -> str:
        return str(self.notification_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointTarget:
    """What a webhook notification's endpoint says at claim time."""

    endpoint_id: uuid.UUID
    found: bool
    """False: the endpoint was deleted (or never existed in this tenant)."""
    url: str | None
    enabled: bool
    sealed_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    """The current secret, then the previous one while its grace period lasts; sealed
    (:class:`consumers.delivery.endpoints.SecretBox`)."""


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A failed notification with its attempt history, ready for the dead-letter topic."""

    notification_id: uuid.UUID
    channel: str
    failure_reason: str | None
    last_error: str | None
    document: dict[str, Any]
    """Every column of the row plus ``history``: its attempts, oldest first."""


class DeadLetterBatch:
    """Failed rows locked for the dead-letter sweep (from
    :meth:`NotificationStore.dead_letter_batch`)."""

    def __init__(self, conn: AsyncConnection[Any], rows: list[DeadLetterRow]) -> None:
        self._conn = conn
        self.rows = rows

    async def mark(self, ids: Sequence[uuid.UUID]) -> None:
        """Record that these rows are on the dead-letter topic (commits with the batch)."""
        if ids:
            await self._conn.execute(_MARK_DEAD_LETTERED, {"ids": list(ids)})


class NotificationStore:
    """Claims, records and releases notifications for one worker.

    ``pool`` hands out autocommit connections whose search path selects the schema.
    """

    def __init__(
        self,
        *,
        pool: AsyncConnectionPool[Any],
        worker_id: str,
        lease_s: float,
        dead_letter_history: int = 50,
        schema: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._worker = worker_id
        self._lease_s = lease_s
        self._history = dead_letter_history
        self._clock = clock

    @property
    def worker_id(self) -> str:
        return self._worker

    async def check_schema(self) -> None:
        """Fail fast unless the delivery tables exist in this store's schema itself.

        Raises:
            SchemaNotReadyError: a table or column is missing there.
        """
        async with self._pool.connection() as conn:
            if self._schema is None:
                cur = await conn.execute("SELECT current_schema()")
                row = await cur.fetchone()
                self._schema = str(row[0]) if row and row[0] else "public"
            cur = await conn.execute(_CHECK_SCHEMA, {"schema": self._schema})
            found = await cur.fetchone()
        if found is None or not all(found):
            raise SchemaNotReadyError(
                self._schema,
                "no notifications/notification_attempts/webhook_endpoints tables of "
                "migrations 0006 and 0009",
            )

    async def claim(self, *, limit: int, exclude: Sequence[str] = ()) -> list[Notification]:
        """Claim up to ``limit`` due notifications, oldest ``next_attempt_at`` first,
        skipping rows other workers hold and destinations in ``exclude``."""
        started = self._clock()
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            try:
                await cur.execute(
                    _CLAIM,
                    {
                        "exclude": list(exclude),
                        "limit": limit,
                        "worker": self._worker,
                        "lease_s": self._lease_s,
                    },
                )
            except (errors.UndefinedTable, errors.UndefinedColumn) as exc:
                raise SchemaNotReadyError(self._schema, str(exc).splitlines()[0]) from exc
            rows = await cur.fetchall()
        deadline = started + self._lease_s
        return [
            Notification(
                notification_id=row["notification_id"],
                event_id=row["event_id"],
                tenant_id=row["tenant_id"],
                channel=row["channel"],
                recipient=row["recipient"],
                template=row["template"],
                params={str(k): _text(v) for k, v in (row["params"] or {}).items()},
                requested_at=row["requested_at"],
                created_at=row["created_at"],
                destination=row["destination"],
                attempt=row["attempts"],
                budget_attempt=row["budget_attempt"],
                age_s=float(row["age_s"]),
                lease_deadline=deadline,
                reclaimed=bool(row["reclaimed"]),
                endpoint=_endpoint(row),
            )
            for row in rows
        ]

    async def record(
        self, notification: Notification, result: AttemptResult, decision: Decision
    ) -> bool:
        """Store the attempt and the row's next state; False if the claim was lost (the
        attempt row is kept either way)."""
        status = {
            Verdict.SENT: "sent",
            Verdict.RETRY: "pending",
            Verdict.FAILED: "failed",
        }[decision.verdict]
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_INSERT_ATTEMPT, self._attempt_params(notification, result))
            cur = await conn.execute(
                _FINISH,
                {
                    **self._fence(notification),
                    "status": status,
                    "delay_s": decision.delay_s,
                    "reason": decision.reason,
                    "last_error": None if status == "sent" else result.describe(),
                },
            )
            return bool(cur.rowcount == 1)

    async def release(self, notification: Notification, *, delay_s: float) -> bool:
        """Give the claim back without an attempt; due again after ``delay_s``."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_RELEASE, {**self._fence(notification), "delay_s": delay_s})
            return bool(cur.rowcount == 1)

    async def fail_unattempted(self, notification: Notification, *, reason: str) -> bool:
        """Fail a claimed notification whose budget is spent before this attempt started
        (crashed attempts count, so a notification that kills workers still ends)."""
        message = (
            f"{reason}: budget spent before attempt {notification.attempt} "
            f"({notification.budget_attempt - 1} attempts, {notification.age_s:.0f} s old)"
        )
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                _FAIL_UNATTEMPTED,
                {**self._fence(notification), "reason": reason, "last_error": message},
            )
            return bool(cur.rowcount == 1)

    async def oldest_undelivered_age(self) -> float:
        """Seconds since the oldest ``pending``/``sending`` row was created (0 if none)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_OLDEST_UNDELIVERED)
            row = await cur.fetchone()
        return float(row[0]) if row and row[0] is not None else 0.0

    @asynccontextmanager
    async def dead_letter_batch(self, limit: int) -> AsyncIterator[DeadLetterBatch]:
        """Lock up to ``limit`` failed rows not yet dead-lettered, in one transaction
        that commits when the block exits normally (rolls back on an exception)."""
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            await cur.execute(_DEAD_LETTER_BATCH, {"limit": limit, "history": self._history})
            rows = [
                DeadLetterRow(
                    notification_id=row["notification_id"],
                    channel=row["channel"],
                    failure_reason=row["failure_reason"],
                    last_error=row["last_error"],
                    document=dict(row),
                )
                for row in await cur.fetchall()
            ]
            yield DeadLetterBatch(conn, rows)

    def _fence(self, notification: Notification) -> dict[str, Any]:
        return {
            "id": notification.notification_id,
            "worker": self._worker,
            "attempt": notification.attempt,
        }

    def _attempt_params(self, notification: Notification, result: AttemptResult) -> dict[str, Any]:
        abandoned = result.outcome is Outcome.ABANDONED
        return {
            "id": notification.notification_id,
            "attempt": notification.attempt,
            "worker": self._worker,
            "destination": notification.destination,
            "started_at": result.started_at,
            "finished_at": result.started_at + timedelta(seconds=result.latency_s),
            "latency_ms": None if abandoned else round(result.latency_s * 1000, 3),
            "outcome": result.outcome.value,
            "status_code": result.status_code,
            "reply": result.reply,
            "error_class": result.error_class,
            "error": result.error,
        }


def _endpoint(row: Mapping[str, Any]) -> EndpointTarget | None:
    if row["endpoint_id"] is None:
        return None
    sealed = (row["secret_sealed"], row["previous_secret_sealed"])
    return EndpointTarget(
        endpoint_id=row["endpoint_id"],
        found=bool(row["endpoint_found"]),
        url=row["endpoint_url"],
        enabled=bool(row["endpoint_enabled"]),
        sealed_secrets=tuple(bytes(s) for s in sealed if s is not None),
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)
