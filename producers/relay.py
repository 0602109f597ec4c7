"""`OutboxRelay`: publish committed outbox rows to Kafka, in order per key, at least once.

One round (:meth:`OutboxRelay.relay_once`) is one Postgres transaction:

1. **claim** — lock the *head* (oldest pending row) of up to ``max_keys`` keys with
   ``FOR UPDATE SKIP LOCKED``, oldest first, plus the pending rows that follow those heads,
   up to ``batch_size`` rows in ``id`` order;
2. **publish** — produce them in ``id`` order with the relay's idempotent producer and wait
   for every delivery report (bounded by ``delivery_timeout_s``);
3. **mark** — set ``sent_at`` on the delivered rows, in the transaction that holds their
   locks; commit. A row that failed (and the rows of its key after it) stays pending,
   with ``attempts`` and ``last_error`` updated; the relay backs off and tries again.

Why two relays never publish one key's rows out of order: a relay only takes rows of a key
whose head it locked, and the head is the key's oldest *pending* row. While relay A holds
(and sends) the head and its followers, relay B sees that same head still pending and
locked, skips the key, and cannot take a later row of it: to B, a later row is never a
head. When A commits, the rows it sent are no longer pending and B's next claim starts
after them. Rows of one key are therefore published by one relay at a time, in ``id``
order, each batch only after the previous batch of that key was acknowledged.

One case is ordered by commit rather than by ``id``: a transaction that took an id, then
committed *after* a later id of the same key was claimed. Its row becomes a new head and
is published then (possibly concurrently with the claimed batch). The two transactions
overlapped, so neither order is wrong; writers that need a strict order per key already
serialise on the entity they change (its row lock), and then ``id`` order is commit order.

Delivery is at least once: a batch acknowledged by Kafka whose ``sent_at`` update does not
commit (Postgres lost, relay killed) is sent again. Duplicates keep the order (a re-sent
prefix, deduplicated on ``event_id`` keeping the first copy, reads in order). A row that
can never be sent blocks its key, visibly: the pending-age gauge grows and ``last_error``
says why; skipping it would break the order of the rows behind it.

The relay sleeps on ``LISTEN`` (the outbox's insert trigger notifies on commit), with a
polling fallback every ``poll_interval_s``; every wait is bounded.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import REGISTRY, CollectorRegistry
from psycopg import sql

from producers.errors import OutboxError
from producers.metrics import RelayMetrics
from producers.outbox import NOTIFY_CHANNEL, outbox_table
from producers.relay_config import RelayConfig
from runtime import ObservabilityServer, Settings
from runtime.clients import kafka_reachable, postgres_connect, producer_config
from runtime.outages import LineLimiter, fix_hint, postgres_failure
from runtime.retry import is_transient_database_error

__all__ = ["BatchResult", "OutboxRelay", "RelayConfig", "RelayStats", "run_relay"]

logger = logging.getLogger(__name__)

_WAIT_SLICE_S = 0.25  # how often a waiting relay looks at its stop event
_MAX_PRUNE_ROUNDS = 10

Connect = Callable[[], psycopg.Connection[Any]]


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one `relay_once` did."""

    claimed: int
    sent: int
    failed: int
    """Rows left pending because they (or an earlier row of their key) were not delivered."""


@dataclass(slots=True)
class RelayStats:
    """Counters of one relay (the Prometheus metrics aggregate them by schema)."""

    batches: int = 0
    """Transactions that claimed rows."""
    relayed: int = 0
    failed_batches: int = 0
    idle_waits: int = 0
    """Times the relay found nothing and started listening for a NOTIFY."""
    notify_wakeups: int = 0
    poll_wakeups: int = 0
    pruned: int = 0
    producer_rebuilds: int = 0


@dataclass(slots=True)
class _Outcomes:
    """Delivery outcome per claimed row: None = delivered, str = why not, absent = waiting."""

    results: dict[int, str | None] = field(default_factory=dict)

    def report(self, index: int, error: KafkaError | None, message: Message) -> None:
        self.results[index] = None if error is None else error.str()


class OutboxRelay:
    """Relays one schema's outbox to Kafka. Run several at once for throughput or
    availability; they split the keys between them.

    `connect` makes a new Postgres connection (the relay opens two: one for work, one that
    listens); `producer_config` is a complete librdkafka producer config (idempotence on);
    the relay sets ``message.timeout.ms`` from `config`. `schema` holds the ``outbox``
    table (default: the connection's current schema). After `unready_after_s` of
    Postgres failing, :meth:`ready` is False; `profile` picks the fix named when
    Postgres cannot be reached.
    """

    def __init__(
        self,
        *,
        connect: Connect,
        producer_config: Mapping[str, Any],
        schema: str | None = None,
        config: RelayConfig | None = None,
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.monotonic,
        unready_after_s: float = 30.0,
        profile: Literal["local", "production"] = "local",
    ) -> None:
        self._connect = connect
        self._profile: Literal["local", "production"] = profile
        self._config = config or RelayConfig()
        self._producer_config = self._checked_producer_config(producer_config, self._config)
        self._schema = schema
        self._clock = clock
        self._metrics = RelayMetrics.for_registry(registry)
        # While Postgres is away the loop retries every few seconds: one line a minute.
        self._outage_lines = LineLimiter(interval_s=60.0, clock=time.monotonic)
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._producer: Producer | None = None
        self._queries: dict[str, sql.Composed] = {}
        self._next_metrics = 0.0
        self._next_prune = 0.0
        self._unready_after_s = unready_after_s
        self._failing_since: float | None = None
        self.stats = RelayStats()

    @property
    def schema(self) -> str | None:
        """The schema of the outbox table (known once connected)."""
        return self._schema

    def ready(self) -> bool:
        """False once Postgres has been failing for ``unready_after_s`` (for ``/readyz``;
        :func:`run_relay` adds whether the producer reaches Kafka)."""
        since = self._failing_since
        return since is None or self._clock() - since < self._unready_after_s

    # --- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Relay until `stop` is set; then finish the batch in hand and close.

        Transient Postgres errors (server down, connection lost) and failed deliveries are
        retried with backoff, forever: the rows wait in the outbox. Anything else (a
        missing table, a bad config) is raised.
        """
        failures = 0
        try:
            while not stop.is_set():
                # The producer's log lines and errors (a broker that is away) reach the
                # process's outage reporter only through poll(), even while idle.
                self._kafka().poll(0)
                try:
                    # LISTEN before claiming: a row committed after this claim finds
                    # nothing still wakes the wait below.
                    self._listening()
                    result = self.relay_once()
                    self._failing_since = None
                    self._housekeeping()
                    if result.failed:
                        failures += 1
                        stop.wait(self._config.backoff(failures))
                        continue
                    failures = 0
                    if result.claimed == 0:
                        self._wait(stop)
                except psycopg.Error as exc:
                    if not is_transient_database_error(exc):
                        raise
                    failures += 1
                    if self._failing_since is None:
                        self._failing_since = self._clock()
                    self._metrics.failures.labels(self._label, "postgres").inc()
                    delay = self._config.backoff(failures)
                    self._report_postgres(exc)
                    self._close_connections()
                    stop.wait(delay)
        finally:
            self.close()

    def _report_postgres(self, exc: psycopg.Error) -> None:
        """One line a minute per kind of failure, naming the server when it is away."""
        found = postgres_failure(str(exc))
        if found is not None:
            where, reason = found
            held = self._outage_lines.admit(("postgres", where, reason))
            if held is not None:
                logger.warning(
                    "cannot reach Postgres at %s (%s); outbox relay retrying — %s%s",
                    where,
                    reason,
                    fix_hint(self._profile, "SIDESTREAM_POSTGRES_DSN"),
                    held,
                )
            return
        reason = " ".join(str(exc).split("\n", 1)[0].split())
        held = self._outage_lines.admit(("postgres", reason))
        if held is not None:
            logger.warning("outbox relay: Postgres error (%s); retrying%s", reason, held)

    def relay_once(self) -> BatchResult:
        """Claim, publish and mark one batch (one transaction); see the module docstring."""
        conn = self._connection()
        started = time.perf_counter()
        with conn.transaction():
            rows = conn.execute(
                self._queries["claim"],
                {"max_keys": self._config.max_keys, "batch_size": self._config.batch_size},
            ).fetchall()
            if not rows:
                return BatchResult(0, 0, 0)
            outcomes = self._publish(rows)
            sent, failed = self._settle(rows, outcomes)
            if sent:
                conn.execute(self._queries["mark_sent"], (sent,))
            if failed:
                conn.execute(
                    self._queries["mark_failed"], ([i for i, _ in failed], [e for _, e in failed])
                )
        self.stats.batches += 1
        self.stats.relayed += len(sent)
        self._metrics.relayed.labels(self._label).inc(len(sent))
        self._metrics.batch_seconds.labels(self._label).observe(time.perf_counter() - started)
        if failed:
            self.stats.failed_batches += 1
            self._metrics.failures.labels(self._label, "kafka").inc()
            # While Kafka is away every batch fails alike: one line a minute.
            held = self._outage_lines.admit(("kafka",))
            if held is not None:
                logger.warning(
                    "outbox relay: %d of %d rows not delivered (first: row %d, %s); they stay "
                    "pending%s",
                    len(failed),
                    len(rows),
                    failed[0][0],
                    failed[0][1],
                    held,
                )
        return BatchResult(len(rows), len(sent), len(failed))

    def prune(self) -> int:
        """Delete sent rows older than the retention; returns how many."""
        conn = self._connection()
        total = 0
        for _ in range(_MAX_PRUNE_ROUNDS):
            deleted = conn.execute(
                self._queries["prune"], (self._config.retention_s, self._config.prune_batch)
            ).rowcount
            total += max(0, deleted)
            if deleted < self._config.prune_batch:
                break
        if total:
            self.stats.pruned += total
            self._metrics.pruned.labels(self._label).inc(total)
            logger.info("outbox relay: pruned %d sent rows", total)
        return total

    def refresh_metrics(self) -> tuple[int, float]:
        """Update the pending gauges; returns (pending rows, oldest pending age in s)."""
        row = self._connection().execute(self._queries["pending"]).fetchone()
        assert row is not None  # an aggregate always returns a row
        pending, age = int(row[0]), float(row[1])
        self._metrics.pending.labels(self._label).set(pending)
        self._metrics.oldest_pending_age.labels(self._label).set(age)
        return pending, age

    def close(self) -> None:
        """Close the connections and the producer (anything unacknowledged stays pending)."""
        self._close_connections()
        self._discard_producer()

    # --- publishing -----------------------------------------------------------------------
    def _publish(self, rows: Sequence[tuple[Any, ...]]) -> _Outcomes:
        producer = self._kafka()
        outcomes = _Outcomes()
        blocked: set[tuple[str, bytes]] = set()
        for index, (_, _, topic, key, value, names, values) in enumerate(rows):
            if (topic, key) in blocked:
                outcomes.results[index] = "an earlier row of this key was not produced"
                continue
            headers = list(zip(names, values, strict=True)) if names else None
            try:
                producer.produce(
                    topic,
                    value,
                    key,
                    on_delivery=functools.partial(outcomes.report, index),
                    headers=headers,
                )
            except (BufferError, KafkaException) as exc:
                # Nothing after this row may go out before it: block the key for this batch.
                outcomes.results[index] = f"produce failed: {exc}"
                blocked.add((topic, key))
        # Every message is reported within message.timeout.ms; the margin covers a request
        # that was in flight when it expired.
        left = producer.flush(self._config.delivery_timeout_s + 5.0)
        if left or any(error is not None for error in outcomes.results.values()):
            # A producer that timed out against a stalled broker may have been fenced, or
            # bumped its epoch: start the next batch with a fresh one.
            self.stats.producer_rebuilds += 1
            self._discard_producer()
        return outcomes

    @staticmethod
    def _settle(
        rows: Sequence[tuple[Any, ...]], outcomes: _Outcomes
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """Sent: each key's rows up to its first failure. Failed: the rest of that key."""
        sent: list[int] = []
        failed: list[tuple[int, str]] = []
        broken: dict[tuple[str, bytes], str] = {}
        for index, row in enumerate(rows):
            row_id, topic, key = row[0], row[2], row[3]
            error = outcomes.results.get(index, "no delivery report within the timeout")
            first_error = broken.get((topic, key))
            if first_error is not None:
                if error is None:
                    # Acknowledged after an earlier row of its key failed: it is sent again
                    # with that row (a duplicate the consumer drops) to keep the order.
                    error = f"re-sent after an earlier failure ({first_error})"
                failed.append((row_id, error))
            elif error is not None:
                broken[(topic, key)] = error
                failed.append((row_id, error))
            else:
                sent.append(row_id)
        return sent, failed

    def _kafka(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(self._producer_config)
        return self._producer

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        producer.purge()
        producer.poll(0)
        producer.close()

    # --- waiting and housekeeping ----------------------------------------------------------
    def _wait(self, stop: threading.Event) -> None:
        """Sleep until a NOTIFY for this schema, `poll_interval_s`, or `stop`."""
        listener = self._listening()
        self.stats.idle_waits += 1
        deadline = self._clock() + self._config.poll_interval_s
        while not stop.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                self.stats.poll_wakeups += 1
                self._metrics.wakeups.labels(self._label, "poll").inc()
                return
            notified = False
            # stop_after=1: return as soon as a notification arrives instead of waiting
            # out the slice (that wait was most of the commit → publish latency).
            for note in listener.notifies(timeout=min(remaining, _WAIT_SLICE_S), stop_after=1):
                notified = notified or note.payload == self._schema
            if notified:
                self.stats.notify_wakeups += 1
                self._metrics.wakeups.labels(self._label, "notify").inc()
                return

    def _housekeeping(self) -> None:
        now = self._clock()
        if now >= self._next_metrics:
            self._next_metrics = now + self._config.metrics_interval_s
            self.refresh_metrics()
        if now >= self._next_prune:
            self._next_prune = now + self._config.prune_interval_s
            self.prune()

    # --- connections ----------------------------------------------------------------------
    @property
    def _label(self) -> str:
        return self._schema or ""

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            conn = self._connect()
            conn.autocommit = True  # transactions are explicit: conn.transaction()
            self._conn = conn
            if self._schema is None:
                row = conn.execute("SELECT current_schema()").fetchone()
                self._schema = str(row[0]) if row and row[0] else "public"
            self._check_table(conn)
            self._prepare_queries()
        return self._conn

    def _listening(self) -> psycopg.Connection[Any]:
        if self._listener is None or self._listener.closed:
            listener = self._connect()
            listener.autocommit = True  # notifications arrive between transactions
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
            self._listener = listener
        return self._listener

    def _close_connections(self) -> None:
        for conn in (self._conn, self._listener):
            if conn is not None and not conn.closed:
                conn.close()
        self._conn = self._listener = None

    def _check_table(self, conn: psycopg.Connection[Any]) -> None:
        name = outbox_table(self._schema).as_string(conn)
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        if row is None or row[0] is None:
            raise OutboxError(
                f"no outbox table in schema {self._schema!r}: apply the producers "
                "migrations first (sidestream db migrate)"
            )

    def _prepare_queries(self) -> None:
        table = outbox_table(self._schema)
        self._queries = {
            # Heads: each key's oldest pending row. Locking a head claims its key (see the
            # module docstring); its followers are locked without SKIP LOCKED since no
            # other relay takes rows of a key whose head it does not hold.
            "claim": sql.SQL(
                """
                WITH heads AS (
                    SELECT id, topic, key FROM {t}
                     WHERE sent_at IS NULL
                       AND id IN (SELECT min(id) FROM {t} WHERE sent_at IS NULL
                                   GROUP BY topic, key)
                     ORDER BY id
                     LIMIT %(max_keys)s
                       FOR UPDATE SKIP LOCKED
                )
                SELECT o.id, o.event_id, o.topic, o.key, o.value, o.header_names,
                       o.header_values
                  FROM {t} AS o
                  JOIN heads AS h ON o.topic = h.topic AND o.key = h.key AND o.id >= h.id
                 WHERE o.sent_at IS NULL
                 ORDER BY o.id
                 LIMIT %(batch_size)s
                   FOR UPDATE OF o
                """
            ).format(t=table),
            "mark_sent": sql.SQL("UPDATE {t} SET sent_at = now() WHERE id = ANY(%s)").format(
                t=table
            ),
            "mark_failed": sql.SQL(
                """
                UPDATE {t} AS o SET attempts = o.attempts + 1, last_error = f.error
                  FROM unnest(%s::bigint[], %s::text[]) AS f(id, error)
                 WHERE o.id = f.id
                """
            ).format(t=table),
            "prune": sql.SQL(
                """
                DELETE FROM {t} WHERE id IN (
                    SELECT id FROM {t}
                     WHERE sent_at < now() - make_interval(secs => %s)
                     LIMIT %s
                       FOR UPDATE SKIP LOCKED)
                """
            ).format(t=table),
            "pending": sql.SQL(
                """
                SELECT count(*),
                       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
                  FROM {t} WHERE sent_at IS NULL
                """
            ).format(t=table),
        }

    @staticmethod
    def _checked_producer_config(given: Mapping[str, Any], config: RelayConfig) -> dict[str, Any]:
        result = dict(given)
        if "bootstrap.servers" not in result:
            raise ValueError("the relay's producer config has no bootstrap.servers")
        timeout_ms = int(config.delivery_timeout_s * 1000)
        for name in ("message.timeout.ms", "delivery.timeout.ms"):
            if name in result and int(result[name]) != timeout_ms:
                raise ValueError(
                    f"contradictory delivery timeouts: {name}={result[name]} in the producer "
                    f"config, delivery_timeout_s={config.delivery_timeout_s}; set only "
                    "RelayConfig.delivery_timeout_s"
                )
            result.pop(name, None)
        result["message.timeout.ms"] = timeout_ms
        # A request stuck on a stalled broker must give up before the batch does.
        result.setdefault("request.timeout.ms", min(30_000, max(1000, timeout_ms // 2)))
        for name in ("on_delivery", "dr_cb", "dr_msg_cb"):
            if name in result:
                raise ValueError(f"{name}: the relay handles delivery reports itself")
        # The batch must fit in the local queue, or produce() would refuse part of it.
        queued = int(result.get("queue.buffering.max.messages", 100_000))
        if queued < config.batch_size:
            raise ValueError(
                f"queue.buffering.max.messages={queued} is smaller than batch_size="
                f"{config.batch_size}"
            )
        return result


def run_relay(
    settings: Settings,
    *,
    stop: threading.Event,
    schema: str | None = None,
    registry: CollectorRegistry = REGISTRY,
    config: RelayConfig | None = None,
    serve_metrics: bool = False,
) -> None:
    """Run an outbox relay for ``sidestream worker run outbox-relay`` until `stop` is set.

    The caller owns signals (SIGTERM sets `stop`). `schema` defaults to
    ``settings.postgres_schema``; its ``outbox`` table must exist. `config` defaults to
    :meth:`RelayConfig.from_settings`. With `serve_metrics` it serves ``/metrics``,
    ``/healthz`` and ``/readyz`` (ready: Postgres answers and the producer reaches Kafka)
    on the settings' metrics address.
    """
    target = schema or settings.postgres_schema
    relay = OutboxRelay(
        connect=functools.partial(postgres_connect, settings, schema=target, connect_timeout=5),
        producer_config=producer_config(settings, **{"client.id": "sidestream-outbox-relay"}),
        schema=target,
        config=config or RelayConfig.from_settings(settings),
        registry=registry,
        unready_after_s=settings.consumer_retry_deadline_s,
        profile=settings.profile,
    )
    with ObservabilityServer.for_worker_if(
        serve_metrics,
        settings,
        registry=registry,
        ready=lambda: relay.ready() and kafka_reachable(settings),
    ):
        logger.info("outbox relay started on schema %s", target)
        relay.run(stop)
    logger.info(
        "outbox relay stopped: %d rows relayed in %d batches",
        relay.stats.relayed,
        relay.stats.batches,
    )
