"""The delivery worker: claim due notifications, send them, record every attempt.

One asyncio loop per worker process:

1. **wait** — until a ``NOTIFY sidestream_notifications`` (the sink sends one on
   commit), a retry this worker scheduled falls due, a slot frees up, or
   ``poll_interval_s`` passes (the fallback for a missed NOTIFY, and for retries
   scheduled by other workers);
2. **claim** — up to ``claim_batch`` rows (see :mod:`consumers.delivery.store`), never
   more than ``max_in_flight`` held at once, and none for a destination whose slots
   are all taken, so a slow host cannot fill the worker;
3. **deliver** — each claimed row on its own task: budget check → circuit check →
   wait for one of the destination's ``per_host_concurrency`` slots → lease check
   (the send must be able to finish before the lease ends) → send → record the
   attempt and the next state (sent / pending with ``next_attempt_at`` / failed);
4. **dead-letter** — a separate task copies failed rows to the dead-letter topic.

Delivery guarantee: a row is sent by the worker that holds its claim, and a send only
starts if it can end before the claim's lease does, so two workers never send one
notification at the same time. A worker that dies mid-send leaves the claim to expire;
the next claim records that attempt as ``abandoned`` and sends again — at most one extra
attempt, with the same ``Idempotency-Key`` / ``Message-ID``.

Shutdown (stop event / SIGTERM): claim nothing more, let deliveries in flight finish
within ``shutdown_deadline_s``, cancel the rest (their claims are released, an attempt
in progress is recorded as ``abandoned`` and retried at once by the next worker).

The process around the loop (settings checked, pool, channels, dead-letter producer,
``/metrics``) is built by :func:`consumers.delivery.process.run_notify_worker`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from consumers.delivery.channel import Channel
from consumers.delivery.circuit import CircuitBreakers, HostLimiter
from consumers.delivery.config import DeliveryConfig
from consumers.delivery.dead_letters import NotificationDeadLetters
from consumers.delivery.errors import DeadLetterFlushError
from consumers.delivery.metrics import DeliveryMetrics
from consumers.delivery.policy import (
    AttemptResult,
    Decision,
    Outcome,
    RetryPolicy,
    Stopwatch,
    Verdict,
)
from consumers.delivery.store import Notification, NotificationStore
from consumers.sinks.notifications import NOTIFY_CHANNEL
from runtime.lifecycle import ExitStatus
from runtime.retry import Backoff, is_transient

logger = logging.getLogger(__name__)

_STOP_SLICE_S = 0.25  # how often a waiting worker looks at its (threading) stop event
_RELEASE_TIMEOUT_S = 5.0  # shutdown: giving back a cancelled delivery's claim
ListenerFactory = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]
T = TypeVar("T")


class _StoppedError(Exception):
    """Stop was requested while a call was still waiting (for the database)."""


async def _unless_stopped(call: Awaitable[T], stop: threading.Event) -> T:
    """``call``'s result, unless ``stop`` is set first: then it is cancelled and
    :class:`_StoppedError` raised.

    While Postgres is away a call waits for a pooled connection for the pool's whole
    timeout (10 s), and a SIGTERM would wait with it. A call cancelled while it already
    ran its transaction rolls back; one cancelled during COMMIT may leave its rows
    claimed, and they are claimed again when the lease ends: late, never lost.
    """
    task = asyncio.ensure_future(call)
    while True:
        done, _pending = await asyncio.wait({task}, timeout=_STOP_SLICE_S)
        if done:
            return task.result()
        if stop.is_set():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task
            raise _StoppedError


class DeliveryWorker:
    """Delivers notifications until stopped; every resource is injected.

    ``channels`` maps the ``channel`` column (``EMAIL``, ``WEBHOOK``) to a
    :class:`~consumers.delivery.channel.Channel`; ``listen`` opens an autocommit
    connection for ``LISTEN`` (None: poll only); ``dead_letters`` None disables the sweep.
    """

    def __init__(
        self,
        *,
        config: DeliveryConfig,
        store: NotificationStore,
        channels: Mapping[str, Channel],
        metrics: DeliveryMetrics,
        dead_letters: NotificationDeadLetters | None = None,
        listen: ListenerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: random.Random | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._channels = dict(channels)
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._listen_factory = listen
        self._clock = clock
        self._rand = rand or random.Random()
        self._policy = RetryPolicy(
            max_attempts=config.max_attempts,
            max_age_s=config.max_age_s,
            backoff=config.backoff,
            max_retry_after_s=config.max_retry_after_s,
        )
        self._db_backoff = Backoff(base_s=0.1, cap_s=5.0)
        self._breakers = CircuitBreakers(
            failure_threshold=config.circuit_failure_threshold,
            cooldown_s=config.circuit_cooldown_s,
            clock=clock,
        )
        self._limiter = HostLimiter(config.per_host_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._dead_letter_wake: asyncio.Event | None = None
        self._next_due: float | None = None
        self._last_db_ok = clock()
        self._db_failures = 0

    # --- public ----------------------------------------------------------------------
    def ready(self) -> bool:
        """Postgres answered a claim recently (for ``/readyz``; called from any thread)."""
        return self._clock() - self._last_db_ok < self._ready_window_s()

    async def run(self, stop: threading.Event) -> ExitStatus:
        """Deliver until ``stop`` is set; DRAINED if every delivery in flight finished
        within the shutdown deadline, ABANDONED if some had to be cancelled."""
        if not await self._schema_checked(stop):
            return ExitStatus.DRAINED  # stopped while the database was away: nothing held
        self._wake = asyncio.Event()
        self._dead_letter_wake = asyncio.Event()
        helpers = [asyncio.create_task(self._housekeeping(), name="delivery-housekeeping")]
        if self._listen_factory is not None:
            helpers.append(asyncio.create_task(self._listen(), name="delivery-listen"))
        if self._dead_letters is not None:
            helpers.append(asyncio.create_task(self._sweep_loop(stop), name="delivery-dlq"))
        logger.info("delivery worker %s started", self._store.worker_id)
        try:
            while not stop.is_set():
                _raise_if_failed(helpers)
                more = await self._claim_round(stop)
                if not more:
                    await self._wait(stop)
                else:
                    await asyncio.sleep(0)  # let the new deliveries start
        finally:
            status = await self._drain()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        logger.info("delivery worker %s stopped: %s", self._store.worker_id, status.name.lower())
        return status

    # --- the loop --------------------------------------------------------------------
    async def _schema_checked(self, stop: threading.Event) -> bool:
        """Check the tables once the database answers: while it is away, retry with
        backoff (reporting not ready past the readiness window) until ``stop`` is set.
        False: stopped first. A missing table is raised at once (a deploy error)."""
        attempt = 0
        while not stop.is_set():
            try:
                await _unless_stopped(self._store.check_schema(), stop)
            except _StoppedError:
                return False
            except (psycopg.Error, OSError) as exc:
                if not is_transient(exc):
                    raise
                self._db_failed("check schema", exc)
                await self._sleep(self._db_backoff.delay(min(attempt, 10), self._rand), stop)
                attempt += 1
                continue
            self._db_ok()
            return True
        return False

    async def _sleep(self, delay_s: float, stop: threading.Event) -> None:
        """Sleep ``delay_s``, looking at the (threading) stop event every slice."""
        deadline = self._clock() + delay_s
        while not stop.is_set() and (remaining := deadline - self._clock()) > 0:
            await asyncio.sleep(min(remaining, _STOP_SLICE_S))

    async def _claim_round(self, stop: threading.Event) -> bool:
        """Claim and start deliveries; True if a full batch came back (more may be due)."""
        room = self._config.max_in_flight - len(self._tasks)
        if room <= 0:
            return False
        limit = min(room, self._config.claim_batch)
        try:
            batch = await _unless_stopped(
                self._store.claim(limit=limit, exclude=self._limiter.saturated()), stop
            )
        except _StoppedError:
            return False  # the loop ends: nothing was claimed
        except (psycopg.Error, OSError) as exc:
            if not is_transient(exc):
                raise
            self._db_failed("claim", exc)
            return False
        self._db_ok()
        for notification in batch:
            task = asyncio.create_task(
                self._deliver(notification), name=f"deliver-{notification.notification_id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._delivery_done)
        self._metrics.in_flight.set(len(self._tasks))
        return len(batch) == limit

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._metrics.in_flight.set(len(self._tasks))
        # Wake the loop only when a whole batch fits again: one claim query per batch,
        # not per finished delivery.
        if self._wake is not None and (
            len(self._tasks) <= self._config.max_in_flight - self._config.claim_batch
        ):
            self._wake.set()

    async def _wait(self, stop: threading.Event) -> None:
        assert self._wake is not None
        deadline = self._clock() + self._config.poll_interval_s
        if self._next_due is not None:
            deadline = min(deadline, self._next_due)
        while not stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(remaining, _STOP_SLICE_S))
                break
            except TimeoutError:
                continue
        self._wake.clear()
        if self._next_due is not None and self._next_due <= self._clock():
            self._next_due = None

    def _note_due(self, delay_s: float) -> None:
        """This worker just scheduled a row for ``delay_s`` from now: look again then."""
        due = self._clock() + delay_s
        if self._next_due is None or due < self._next_due:
            self._next_due = due

    # --- one delivery ----------------------------------------------------------------
    async def _deliver(self, notification: Notification) -> None:
        channel = self._channels.get(notification.channel)
        label = notification.channel.lower()
        phase = "queued"  # → "sending" → "done"
        try:
            if channel is None:
                # Unknown channels cannot be in the table (CHECK constraint); be explicit.
                raise RuntimeError(f"no channel for {notification.channel}")
            reason = self._policy.spent(
                attempt=notification.budget_attempt, age_s=notification.age_s
            )
            if reason is not None:
                phase = "done"
                await self._fail_unattempted(notification, reason)
                return
            breaker = self._breakers.get(notification.destination)
            if breaker.blocked():
                phase = "done"
                await self._defer(notification, channel, "circuit_open")
                return
            async with self._limiter.slot(notification.destination):
                margin = channel.deadline_s + self._config.lease_margin_s
                if self._clock() + margin > notification.lease_deadline:
                    # Waited too long for a slot: the send might outlive the claim.
                    phase = "done"
                    await self._release(notification, delay_s=0.0, reason="lease", label=label)
                    return
                if not breaker.acquire():
                    phase = "done"
                    await self._defer(notification, channel, "circuit_open")
                    return
                phase = "sending"
                try:
                    result = await channel.send(notification)
                except BaseException:
                    breaker.record_neutral()  # cancelled: free a half-open probe slot
                    raise
                if result.outcome is Outcome.SENT or (
                    result.outcome is Outcome.PERMANENT and result.status_code is not None
                ):
                    breaker.record_success()  # the endpoint answered
                elif result.endpoint_failed:
                    breaker.record_failure()
                else:
                    breaker.record_neutral()
                self._metrics.open_circuits.set(self._breakers.open_count())
            decision = self._policy.decide(
                result,
                attempt=notification.budget_attempt,
                age_s=notification.age_s + result.latency_s,
                rand=self._rand,
            )
            phase = "done"
            await self._record(notification, result, decision)
        except asyncio.CancelledError:
            if phase != "done":
                await self._give_back(notification, attempted=phase == "sending")
            raise
        except Exception:
            # A bug, not a delivery outcome: the claim expires and the row is retried.
            self._metrics.errors.labels(label).inc()
            logger.exception(
                "delivery of notification %s raised; its lease will expire and it will be retried",
                notification.notification_id,
            )

    async def _record(
        self, notification: Notification, result: AttemptResult, decision: Decision
    ) -> None:
        label = notification.channel.lower()
        self._metrics.latency.labels(label, result.outcome.value).observe(result.latency_s)
        owned = await self._with_db_retries(
            "record",
            notification,
            lambda: self._store.record(notification, result, decision),
        )
        log_args = (notification.notification_id, notification.attempt, result.describe())
        if owned is None:
            return
        if not owned:
            self._metrics.fenced.labels(label).inc()
            logger.warning(
                "notification %s attempt %d (%s): claim lost to another worker; "
                "result kept in the attempt history only",
                *log_args,
            )
            return
        if decision.verdict is Verdict.SENT:
            self._metrics.sent.labels(label).inc()
            self._metrics.attempts.labels(label, "sent").observe(notification.attempt)
            logger.debug("notification %s sent on attempt %d: %s", *log_args)
        elif decision.verdict is Verdict.RETRY:
            self._metrics.retried.labels(label).inc()
            self._note_due(decision.delay_s)
            logger.info(
                "notification %s attempt %d failed (%s); retry in %.2f s",
                *log_args,
                decision.delay_s,
            )
        else:
            self._failed(notification, decision.reason or "failed")
            logger.warning(
                "notification %s failed (%s) after attempt %d: %s",
                notification.notification_id,
                decision.reason,
                notification.attempt,
                result.describe(),
            )

    def _failed(self, notification: Notification, reason: str) -> None:
        label = notification.channel.lower()
        self._metrics.failed.labels(label, reason).inc()
        self._metrics.attempts.labels(label, "failed").observe(notification.attempt)
        if self._dead_letter_wake is not None:
            self._dead_letter_wake.set()

    async def _fail_unattempted(self, notification: Notification, reason: str) -> None:
        owned = await self._with_db_retries(
            "fail",
            notification,
            lambda: self._store.fail_unattempted(notification, reason=reason),
        )
        if owned:
            self._failed(notification, reason)
            logger.warning(
                "notification %s failed (%s) before attempt %d",
                notification.notification_id,
                reason,
                notification.attempt,
            )

    async def _defer(self, notification: Notification, channel: Channel, reason: str) -> None:
        breaker = self._breakers.get(notification.destination)
        # Until the circuit lets a probe through (or, half-open, until the probe is done),
        # spread out so the rows do not all come back at the same instant.
        wait = breaker.remaining_s() or channel.deadline_s
        delay = wait + self._rand.uniform(0, self._config.backoff_base_s)
        await self._release(notification, delay_s=delay, reason=reason, label=channel.name.lower())

    async def _release(
        self, notification: Notification, *, delay_s: float, reason: str, label: str
    ) -> None:
        owned = await self._with_db_retries(
            "release",
            notification,
            lambda: self._store.release(notification, delay_s=delay_s),
        )
        if owned:
            self._metrics.deferred.labels(label, reason).inc()
            self._note_due(delay_s)
            logger.debug(
                "notification %s deferred %.2f s without an attempt (%s)",
                notification.notification_id,
                delay_s,
                reason,
            )

    async def _give_back(self, notification: Notification, *, attempted: bool) -> None:
        """Shutdown cancelled this delivery: hand the claim back so the next worker does
        not wait for the lease (best effort; the lease covers a failure here)."""
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                if attempted:
                    watch = Stopwatch()
                    result = watch.result(
                        Outcome.ABANDONED,
                        error_class="shutdown",
                        error="worker stopped before the send finished",
                    )
                    await self._store.record(notification, result, Decision(Verdict.RETRY))
                else:
                    await self._store.release(notification, delay_s=0.0)
        except Exception as exc:
            logger.warning(
                "could not release notification %s on shutdown (%s); its lease will expire",
                notification.notification_id,
                exc,
            )

    async def _with_db_retries(
        self, operation: str, notification: Notification, call: Callable[[], Awaitable[bool]]
    ) -> bool | None:
        """Run a write, retrying transient Postgres errors while the claim is ours.

        Returns its result, or None when the lease ran out first (the row will be
        claimed again: at most one extra attempt)."""
        attempt = 0
        while True:
            try:
                result = await call()
            except (psycopg.Error, OSError) as exc:
                if not is_transient(exc):
                    raise
                self._db_failed(operation, exc)
                delay = self._db_backoff.delay(attempt, self._rand)
                attempt += 1
                if self._clock() + delay >= notification.lease_deadline:
                    logger.error(
                        "notification %s: could not %s before the lease ended (%s); another "
                        "worker will claim it again",
                        notification.notification_id,
                        operation,
                        exc,
                    )
                    return None
                await asyncio.sleep(delay)
                continue
            self._db_ok()
            return result

    def _db_ok(self) -> None:
        self._last_db_ok = self._clock()
        if self._db_failures:
            logger.info("postgres reachable again after %d failed calls", self._db_failures)
        self._db_failures = 0

    def _db_failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.db_errors.labels(operation).inc()
        self._db_failures += 1
        delay = self._db_backoff.delay(min(self._db_failures, 10), self._rand)
        self._note_due(delay)
        # One line per outage (the pool's own line says "cannot reach Postgres", once a
        # minute): every call fails while the database is away, and the metric counts them.
        if self._db_failures == 1:
            logger.warning(
                "postgres %s failed (%s); retrying (not ready after %.0f s)",
                operation,
                " ".join(str(exc).split()),
                self._ready_window_s(),
            )

    def _ready_window_s(self) -> float:
        # An idle worker claims every poll_interval_s: a few missed claims are no outage.
        return max(self._config.unready_after_s, 3 * self._config.poll_interval_s)

    # --- helpers tasks ---------------------------------------------------------------
    async def _listen(self) -> None:
        """Set the wake event on every NOTIFY; reconnect with backoff if the connection
        drops (polling covers the gap)."""
        assert self._listen_factory is not None
        assert self._wake is not None
        failures = 0
        while True:
            try:
                conn = await self._listen_factory()
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    failures = 0
                    async for _note in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                failures += 1
                delay = self._db_backoff.delay(min(failures, 10), self._rand)
                # Once per outage, and not when the database is away altogether (the
                # pool's line says so): it retries every few seconds.
                if failures == 1 and self._db_failures == 0:
                    logger.warning(
                        "LISTEN connection failed (%s); polling until it reconnects",
                        " ".join(str(exc).split()),
                    )
                await asyncio.sleep(delay)

    async def _housekeeping(self) -> None:
        while True:
            self._breakers.forget_healthy()
            self._metrics.open_circuits.set(self._breakers.open_count())
            try:
                age = await self._store.oldest_undelivered_age()
            except (psycopg.Error, OSError) as exc:
                if not is_transient(exc):
                    raise
                self._db_failed("metrics", exc)
            else:
                self._db_ok()
                self._metrics.oldest_pending_age.set(age)
            await asyncio.sleep(self._config.metrics_interval_s)

    async def _sweep_loop(self, stop: threading.Event) -> None:
        assert self._dead_letters is not None
        assert self._dead_letter_wake is not None
        failures = 0
        while True:
            self._dead_letters.serve()  # Kafka outages are reported (and readiness sees them)
            try:
                swept = await self._dead_letters.sweep(
                    self._store, limit=self._config.dead_letter_batch
                )
            except (DeadLetterFlushError, psycopg.Error, OSError) as exc:
                if isinstance(exc, psycopg.Error | OSError) and not is_transient(exc):
                    raise
                failures += 1
                if failures == 1:  # once per outage: it retries every few seconds
                    logger.warning("dead-letter sweep failed (%s); retrying", exc)
                await asyncio.sleep(self._db_backoff.delay(min(failures, 10), self._rand))
                continue
            failures = 0
            for row in swept:
                self._metrics.dead_letters.labels(row.channel.lower()).inc()
            if len(swept) == self._config.dead_letter_batch:
                continue  # a full batch: there may be more
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    self._dead_letter_wake.wait(), timeout=self._config.dead_letter_interval_s
                )
            self._dead_letter_wake.clear()

    async def _drain(self) -> ExitStatus:
        if not self._tasks:
            return ExitStatus.DRAINED
        logger.info("draining %d deliveries in flight", len(self._tasks))
        _done, pending = await asyncio.wait(
            set(self._tasks), timeout=self._config.shutdown_deadline_s
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return ExitStatus.ABANDONED if pending else ExitStatus.DRAINED


def _raise_if_failed(helpers: list[asyncio.Task[None]]) -> None:
    """A helper task only ends by raising (a non-transient error): stop the worker too."""
    for helper in helpers:
        if helper.done() and not helper.cancelled():
            error = helper.exception()
            if error is not None:
                raise error
