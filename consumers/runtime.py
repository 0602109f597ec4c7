"""The one batch loop every sink runs in.

Lifecycle of a batch (two stages, on two threads, with a queue of one between them):

1. **poll** — wait up to ``max_wait`` for a first record, then take what the consumer
   has at hand (``consume(num_messages, linger)``); the batch closes at ``max_records``,
   as soon as a ``consume`` call hands over fewer records than asked (nothing more is
   immediately available: low load costs one fetch and one commit), or ``max_wait``
   after its first record;
2. **decode** — bytes → typed events or COPY rows (both wire formats, writer → reader
   schema); undecodable records are set aside as poison. The batch is cut under the
   *claims* its partitions have now: it may be written only while they still stand;
3. **hand over** — wait until the writer has finished the previous batch and take its
   outcome (below), then give it this one;
4. **write** (the writer thread) — one Postgres transaction: the sink writes its rows (a
   row the database rejects for its data is isolated by bisecting the batch in
   savepoints), dead letters are flushed to Kafka, then the batch's offsets are stored
   in ``consumer_offsets``, fenced by the generation of the claims it was cut under;
   commit;
5. **acknowledge** (the loop, when it takes the outcome) — only after the Postgres
   commit, offsets are also committed to Kafka (asynchronously) so standard lag tools
   see progress. A failed write comes back here: a transient one is retried on the loop's
   thread, paused, as before (the next batch waits, cut, until it lands); ``Fenced``
   drops the batch and rewinds what is still ours; anything else ends the worker.

So while batch N is written, batch N+1 is polled and decoded; batches are committed one
at a time, in the order they were read. Only the loop's thread touches the Kafka
consumer (poll, pause/resume, seek, rebalance callbacks); the writer touches Postgres and
the dead-letter producer only. A revocation (or a lost assignment) first waits for the
batch being written — its commit lands before the new owner claims, or is fenced — then
drops every record of the revoked partitions it holds: buffered, cut, or waiting to be
retried. ``BatchConfig.pipeline=False`` (``SIDESTREAM_CONSUMER_PIPELINE=false``) writes
on the loop's thread instead: the same steps, one after the other.

Postgres is the source of truth for positions: on assignment the runtime claims the
partitions in Postgres and starts from the offsets stored there — after checking each
against the partition's log (:mod:`consumers.log_range`): a stored offset before the
log's start or past its confirmed end is refused or reset, as the policy says, never
followed silently. A running worker repeats the check every ``log_check_interval_s`` (a
topic recreated under it). While Postgres is unreachable the runtime pauses its
partitions (holding the failed batch, the next one cut, and what was buffered — no more)
and retries with backoff until it returns; the pause belongs to the failed batch, so it
ends when that batch is written or taken away by a rebalance. Claiming on assignment
retries the same way and never gives up: past the retry deadline the worker reports not
ready and keeps trying. On SIGTERM it stops polling, waits for the batch being written,
writes the records it holds, commits and leaves the group — both stages within one
deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from psycopg_pool import ConnectionPool

from consumers.dead_letters import DeadLetterError, DeadLetters
from consumers.log_range import LogBounds, OffsetOutOfRange, OutOfRangePolicy
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Claim, Fenced, PostgresOffsets, TopicPartitionKey
from consumers.records import RawRecord, Record, headers_of
from consumers.sink import Sink
from runtime import Settings
from runtime.lifecycle import ExitStatus as ExitStatus  # where its callers import it from
from runtime.retry import Backoff, is_poison, is_transient
from runtime.settings import setting_default
from schemas import (
    DecodeError,
    EventDeserializer,
    RegistryError,
    UnknownSchemaError,
    ValidationError,
)

logger = logging.getLogger(__name__)

# Longest wait for a batch's first record before the loop looks at stop and checks.
_IDLE_POLL_S = 0.5
# How long a probe of a failing database may wait for a connection.
_PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How batches are cut, retried and drained."""

    max_records: int = setting_default("consumer_batch_max_records")
    max_wait_s: float = setting_default("consumer_batch_max_wait_ms") / 1000
    linger_s: float = setting_default("consumer_batch_linger_ms") / 1000
    retry_deadline_s: float = setting_default("consumer_retry_deadline_s")
    shutdown_deadline_s: float = setting_default("consumer_shutdown_deadline_s")
    dead_letter_timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    offset_out_of_range: OutOfRangePolicy = OutOfRangePolicy.REFUSE
    log_check_interval_s: float = 10.0
    #: Write batch N on a writer thread while batch N+1 is polled and decoded.
    pipeline: bool = setting_default("consumer_pipeline")

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchConfig:
        """The ``consumer_*`` settings; what is not a setting keeps its default."""
        return cls(
            max_records=settings.consumer_batch_max_records,
            max_wait_s=settings.consumer_batch_max_wait_ms / 1000,
            linger_s=settings.consumer_batch_linger_ms / 1000,
            retry_deadline_s=settings.consumer_retry_deadline_s,
            shutdown_deadline_s=settings.consumer_shutdown_deadline_s,
            offset_out_of_range=OutOfRangePolicy(settings.consumer_offset_out_of_range),
            log_check_interval_s=settings.consumer_offset_check_interval_s,
            pipeline=settings.consumer_pipeline,
        )


@dataclass(slots=True)
class _Poison:
    raw: RawRecord
    error_class: str
    message: str


class _ShutdownDeadlineError(Exception):
    """The shutdown deadline passed while a batch was still unwritten."""


class _StopRequestedError(Exception):
    """Stop was requested while claiming partitions: give up the assignment."""


@dataclass(slots=True)
class _Refused:
    """A partition assigned to us that we do not consume: its offset is outside the log."""

    condition: OffsetOutOfRange
    claim: Claim


@dataclass(slots=True)
class _Batch:
    """Records cut from the buffer under ``claims`` (each partition's claim when it was
    cut): only while those claims still stand may the batch be written."""

    messages: list[Message]
    claims: dict[TopicPartitionKey, Claim]
    # The next offset of each partition once the batch is committed.
    positions: dict[TopicPartitionKey, int]
    # None until decoded (a registry outage can leave it so until the retry decodes it).
    decoded: tuple[list[Record[Any]], list[_Poison]] | None = None

    def only(self, keys: set[TopicPartitionKey]) -> _Batch:
        """The part of this batch that belongs to the partitions ``keys``."""

        def ours(topic: str | None, partition: int | None) -> bool:
            return (topic or "", partition or 0) in keys

        decoded = None
        if self.decoded is not None:
            records, poison = self.decoded
            decoded = (
                [r for r in records if ours(r.raw.topic, r.raw.partition)],
                [p for p in poison if ours(p.raw.topic, p.raw.partition)],
            )
        return _Batch(
            [m for m in self.messages if ours(m.topic(), m.partition())],
            {k: c for k, c in self.claims.items() if k in keys},
            {k: n for k, n in self.positions.items() if k in keys},
            decoded,
        )


@dataclass(frozen=True, slots=True)
class _Written:
    """What the writer reports of a committed batch."""

    rows: int
    dead_letters: int


class _Writer:
    """One thread writing the batches it is handed, one at a time: a queue of one.

    The loop hands a batch over with :meth:`submit` only after it took the previous
    batch's outcome with :meth:`outcome`, so at most one batch is being written and
    batches commit in the order they were read. The thread runs ``write`` (Postgres and
    the dead-letter producer), never the Kafka consumer; whatever ``write`` raises is the
    outcome, for the loop to act on.
    """

    def __init__(self, write: Callable[[_Batch], _Written], *, name: str) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._job: _Batch | None = None
        self._result: _Written | BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        with self._changed:
            if self._job is not None or self._result is not None:
                raise RuntimeError("the writer holds a batch already (a queue of one)")
            self._job = batch
            self._changed.notify_all()

    def outcome(self, timeout: float | None) -> _Written | BaseException | None:
        """The handed-over batch's outcome, waiting up to ``timeout`` seconds (None:
        until it is written); None if it is not written yet."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._result is not None, timeout):
                return None
            result, self._result = self._result, None
            return result

    def close(self, timeout: float) -> None:
        """Let the thread end once its batch (if any) is written; wait up to ``timeout``.
        A daemon: a write still running past that (a hung database) does not hold up the
        process; should it still commit, it does so before the partitions' next owner
        claims them, or is fenced."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._job is not None or self._closed)
                job = self._job
                if job is None:
                    return
            result: _Written | BaseException
            try:
                result = self._write(job)
            except BaseException as exc:  # handed to the loop, which decides what it means
                result = exc
            with self._changed:
                self._job, self._result = None, result
                self._changed.notify_all()


class BatchRuntime:
    """Consumes ``topics`` as ``group_id`` and feeds batches to ``sink``.

    All resources are injected: the consumer (not yet subscribed), the Postgres pool
    (whose search path selects the schema), the dead-letter producer, the deserializer,
    what reads the log's bounds, the metrics and a clock.
    """

    def __init__(
        self,
        *,
        sink: Sink,
        topics: Sequence[str],
        group_id: str,
        consumer: Consumer,
        pool: ConnectionPool,
        dead_letters: DeadLetters,
        deserializer: EventDeserializer,
        log_bounds: LogBounds,
        metrics: ConsumerMetrics,
        worker_id: str,
        config: BatchConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._topics = list(topics)
        self._consumer = consumer
        self._pool = pool
        self._dead_letters = dead_letters
        self._deserializer = deserializer
        self._log_bounds = log_bounds
        self._metrics = metrics
        self._config = config or BatchConfig()
        self._clock = clock
        self._group_id = group_id
        self._offsets = PostgresOffsets(group_id, owner=worker_id)
        # A sink may read messages straight into rows (consumers.rows); what its row decoder
        # does not take is decoded below into events, as for every other sink.
        row_decoder = getattr(sink, "row_decoder", None)
        self._rows = None if row_decoder is None else row_decoder(deserializer)
        # Partitions we consume; a refused one is assigned (and paused) but not claimed here.
        self._claims: dict[TopicPartitionKey, Claim] = {}
        self._refused: dict[TopicPartitionKey, _Refused] = {}
        # Refusals already logged (partition → stored offset): a rebalance that hands the
        # same partition back does not repeat the line.
        self._announced: dict[TopicPartitionKey, int] = {}
        # The next offset of each claimed partition as stored in Postgres (None: unknown).
        self._stored: dict[TopicPartitionKey, int] = {}
        self._buffer: list[Message] = []
        self._batch_opened_at: float | None = None
        # The batch cut and decoded, waiting for the writer to take it.
        self._waiting: _Batch | None = None
        # The batch handed to the writer, until the loop took its outcome (and that
        # outcome, when a revocation collected it and the loop has yet to act on it).
        self._in_flight: _Batch | None = None
        self._outcome: _Written | BaseException | None = None
        self._writer: _Writer | None = None
        # The consumer handed over fewer records than asked: nothing more at hand.
        self._drained = False
        # Paused while the batch in hand is retried; the pause ends with that batch.
        self._paused = False
        # While paused, messages already fetched may still arrive: they are dropped and
        # the partition is rewound to the first of them when consumption resumes.
        self._rewind: dict[TopicPartitionKey, int] = {}
        # Since when the database (or the dead-letter topic, or the registry) has been
        # failing; cleared by the next success. Readiness is computed from it.
        self._failing_since: float | None = None
        self._reported_unready = False
        self._next_maintenance = 0.0
        self._lag_series: set[TopicPartitionKey] = set()
        self._stop_requested = threading.Event()
        self.batches_committed = 0

    # --- public --------------------------------------------------------------------------
    def ready(self) -> bool:
        """Readiness: not stopping, not failing for longer than the retry deadline, and
        consuming every partition assigned (none refused for an offset outside its log)."""
        failing = self._failing_since is not None and (
            self._clock() - self._failing_since > self._config.retry_deadline_s
        )
        return not (failing or self._refused or self._stop_requested.is_set())

    @property
    def pipelined(self) -> bool:
        """Whether batches are written on a writer thread (``BatchConfig.pipeline``)."""
        return self._config.pipeline

    @property
    def assignment(self) -> list[TopicPartitionKey]:
        return sorted(self._claims)

    @property
    def refused(self) -> list[OffsetOutOfRange]:
        """Partitions assigned but not consumed: their stored offset is outside the log."""
        return [self._refused[key].condition for key in sorted(self._refused)]

    def run(self, stop: threading.Event) -> ExitStatus:
        """Consume until ``stop`` is set, then drain within the shutdown deadline."""
        self._stop_requested = stop
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        if self._config.pipeline:
            self._writer = _Writer(self._write_and_commit, name=f"{self._sink.name}-writer")
        status = ExitStatus.DRAINED
        try:
            while not stop.is_set():
                self._poll()
                self._settle(deadline=None, wait=False)
                if self._batch_due():
                    self._process_batch(deadline=None)
                self._maintain()
            # Both stages drain within one deadline: the batch being written, then the
            # records still buffered (written on this thread: there is no next batch).
            deadline = self._clock() + self._config.shutdown_deadline_s
            try:
                self._settle(deadline=deadline)
                if self._buffer:
                    logger.info("draining: writing the last %d records", len(self._buffer))
                    self._process_batch(deadline=deadline)
            except _ShutdownDeadlineError:
                logger.error("shutdown deadline passed; the unwritten batch will be re-read")
                status = ExitStatus.ABANDONED
        finally:
            if self._writer is not None:
                # Idle unless a write outlived the deadline (or the loop failed): that one
                # commits before the new owner claims its partitions, or is fenced.
                self._writer.close(timeout=1.0)
            # close() leaves the group at once, so partitions move without waiting for
            # the session timeout. Nothing is committed here: Postgres has the offsets.
            self._consumer.close()
        return status

    # --- rebalance callbacks (run inside consume()) -----------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels(self._sink.name, "assign").inc()
        keys = [(p.topic, p.partition) for p in partitions]
        try:
            claims, refused = self._claim(keys)
        except _StopRequestedError:
            logger.info("stopping: not taking %d assigned partitions", len(keys))
            return
        for partition in partitions:
            key = (partition.topic, partition.partition)
            claim = claims[key] if key in claims else refused[key].claim
            # Nothing stored anywhere: the log's start (auto.offset.reset is "error", so
            # that a position out of range is reported instead of silently moved).
            partition.offset = OFFSET_BEGINNING if claim.next_offset is None else claim.next_offset
        self._claims.update(claims)
        self._stored.update(
            {k: c.next_offset for k, c in claims.items() if c.next_offset is not None}
        )
        consumer.assign(partitions)
        hold = [p for p in partitions if self._paused or (p.topic, p.partition) in refused]
        if hold:
            consumer.pause(hold)
        # librdkafka remembers a partition's pause across unassign/assign: a partition
        # paused for an earlier batch would otherwise stay paused for good.
        take = [p for p in partitions if p not in hold]
        if take:
            consumer.resume(take)
        for key, refusal in refused.items():
            self._refuse(key, refusal)
        logger.info(
            "assigned %s",
            ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in partitions) or "nothing",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels(self._sink.name, "revoke").inc()
        revoked = {(p.topic, p.partition) for p in partitions}
        # The batch being written finishes first: its commit lands before the new owner
        # claims (or, past a lost session, is fenced). A success is acknowledged now; a
        # failure waits for the loop (a retry cannot run inside a callback), which then
        # writes only what is still ours.
        if self._in_flight is not None and self._outcome is None and self._writer is not None:
            self._outcome = self._writer.outcome(timeout=None)
        if isinstance(self._outcome, _Written):
            self._settle(deadline=None)
        for key in revoked:
            self._claims.pop(key, None)
            self._stored.pop(key, None)
            self._rewind.pop(key, None)
            if self._refused.pop(key, None) is not None:
                self._metrics.offset_out_of_range.remove(self._sink.name, key[0], str(key[1]))
            if key in self._lag_series:
                self._lag_series.discard(key)
                self._metrics.lag.remove(self._sink.name, key[0], str(key[1]))
        # Records of revoked partitions are abandoned, not written: the new owner reads
        # them again from the offsets stored in Postgres. (A cut batch, or one waiting to
        # be retried, sheds them when it is next handed over: their claims are gone.)
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in revoked]
        consumer.unassign()
        logger.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(revoked)))

    def _claim(
        self, keys: list[TopicPartitionKey]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        """Claim ``keys`` in Postgres and check their offsets against the log.

        Runs inside the assignment callback, so it must not raise for an outage: it
        retries with backoff for as long as it takes (past the retry deadline the worker
        reports not ready), and gives up only when a stop is requested.
        """
        attempt, started = 0, self._clock()
        while True:
            try:
                return self._claim_once(keys)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failing(exc, "claiming partitions", since=started)
                delay = self._config.backoff.delay(attempt)
                if attempt == 0:
                    logger.warning("claiming partitions failed (%s); retrying", exc)
                if self._stop_requested.wait(delay):
                    raise _StopRequestedError from exc
                attempt += 1

    def _claim_once(
        self, keys: list[TopicPartitionKey]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        with self._pool.connection() as conn, conn.transaction():
            claims = self._offsets.claim(conn, keys)
        self._database_answered()
        return self._check_log(self._with_kafka_offsets(claims))

    def _with_kafka_offsets(
        self, claims: dict[TopicPartitionKey, Claim]
    ) -> dict[TopicPartitionKey, Claim]:
        """Where Postgres has no offset yet, start from Kafka's committed one, if any (as
        the consumer would by itself), so that it is checked against the log too."""
        missing = [TopicPartition(t, p) for (t, p), c in claims.items() if c.next_offset is None]
        if not missing:
            return claims
        try:
            committed = self._consumer.committed(missing, timeout=10)
        except KafkaException as exc:
            raise ConnectionError(f"reading the group's Kafka offsets: {exc}") from exc
        claims = dict(claims)
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.error is None and tp.offset >= 0:
                claims[key] = Claim(tp.offset, claims[key].generation)
        return claims

    def _check_log(
        self, claims: dict[TopicPartitionKey, Claim]
    ) -> tuple[dict[TopicPartitionKey, Claim], dict[TopicPartitionKey, _Refused]]:
        """Split freshly claimed partitions into those to consume and those refused,
        resetting out-of-range offsets first when the policy says so."""
        stored = {key: c.next_offset for key, c in claims.items() if c.next_offset is not None}
        conditions = self._log_bounds.out_of_range(stored) if stored else {}
        claims = dict(claims)
        refused: dict[TopicPartitionKey, _Refused] = {}
        for key, condition in conditions.items():
            if self._config.offset_out_of_range is OutOfRangePolicy.REFUSE:
                refused[key] = _Refused(condition, claims.pop(key))
                continue
            try:
                claims[key] = self._reset(condition, claims[key])
            except Fenced as exc:
                # Someone claimed it after us: a rebalance is on its way; leave it be.
                logger.warning("%s; not resetting %s[%d]", exc, *key)
                claims.pop(key)
        return claims, refused

    def _reset(self, condition: OffsetOutOfRange, claim: Claim) -> Claim:
        """Policy earliest/latest: move the stored offset to the log's start or end."""
        policy = self._config.offset_out_of_range
        target = condition.start if policy is OutOfRangePolicy.EARLIEST else condition.end
        with self._pool.connection() as conn, conn.transaction():
            claim = self._offsets.reset(conn, condition.key, claim, target)
        self._metrics.offset_resets.labels(self._sink.name, policy.value).inc()
        logger.warning(
            "%s: reset to %d (SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE=%s)",
            condition.describe(self._group_id),
            target,
            policy.value,
        )
        return claim

    def _refuse(self, key: TopicPartitionKey, refusal: _Refused) -> None:
        condition = refusal.condition
        self._refused[key] = refusal
        self._metrics.offset_out_of_range.labels(self._sink.name, key[0], str(key[1])).set(1)
        if self._announced.get(key) == condition.stored:
            logger.debug("%s: still refused", condition.describe(self._group_id))
            return
        self._announced[key] = condition.stored
        logger.error(
            "%s: not consuming it (SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE=refuse), "
            "worker not ready; to re-read what the log holds run `%s` "
            "(or set the policy to earliest/latest)",
            condition.describe(self._group_id),
            condition.fix_command(self._group_id),
        )

    # --- polling -----------------------------------------------------------------------
    def _poll(self) -> None:
        if not self._buffer:
            # Nothing in hand: wait for a first record (consume returns as soon as it has
            # one), then gather what came with it. Bounded, so a stop is seen promptly.
            idle_wait = min(self._config.max_wait_s, _IDLE_POLL_S)
            for message in self._consumer.consume(num_messages=1, timeout=idle_wait):
                self._accept(message)
            if not self._buffer:
                return
        opened = self._batch_opened_at if self._batch_opened_at is not None else self._clock()
        remaining = max(0.0, opened + self._config.max_wait_s - self._clock())
        wanted = self._config.max_records - len(self._buffer)
        if wanted <= 0:
            return
        # consume() waits for all it was asked, or the timeout: a short linger, so that a
        # short answer means everything immediately available was handed over.
        got = self._consumer.consume(
            num_messages=wanted, timeout=min(self._config.linger_s, remaining)
        )
        for message in got:
            self._accept(message)
        if len(got) < wanted:
            self._drained = True

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise KafkaException(error)
            if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                # The broker says a position is outside the log: check every one now.
                self._next_maintenance = 0.0
            logger.warning("consumer error: %s", error)
            return
        key = (message.topic() or "", message.partition() or 0)
        if key not in self._claims:
            return  # a leftover of a partition we no longer own
        if self._paused:
            offset = message.offset() or 0
            self._rewind[key] = min(offset, self._rewind.get(key, offset))
            return
        if not self._buffer:
            self._batch_opened_at = self._clock()
        self._buffer.append(message)

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self._config.max_records or self._drained:
            return True
        opened = self._batch_opened_at or self._clock()
        return self._clock() - opened >= self._config.max_wait_s

    # --- one batch ---------------------------------------------------------------------
    def _process_batch(self, deadline: float | None) -> None:
        """Cut and decode the buffer, then hand it to the writer once it has finished the
        previous batch (on this thread when the pipeline is off, or when draining)."""
        messages, self._buffer, self._batch_opened_at = self._buffer, [], None
        self._drained = False
        messages = [m for m in messages if (m.topic(), m.partition()) in self._claims]
        if not messages:
            return
        positions = self._positions(messages)
        batch = _Batch(messages, {key: self._claims[key] for key in positions}, positions)
        failure: Exception | None = None
        try:
            batch.decoded = self._decode(messages)  # while the writer writes the last batch
        except RegistryError as exc:
            failure = exc  # transient: decoded again by the retry below
        # At most one batch in the writer: take the last one's outcome first (retrying it
        # here if it failed). Meanwhile this one waits where a rebalance or a fence can
        # see it.
        self._waiting = batch
        try:
            self._settle(deadline=deadline)
        finally:
            waiting, self._waiting = self._waiting, None
        if waiting is None:
            return  # dropped: a fence of the last batch rewound its partitions
        if self._writer is None or deadline is not None or failure is not None:
            self._write_retrying(waiting, deadline, failure)
            return
        batch = self._still_ours(waiting)
        if batch.positions:
            self._in_flight = batch
            self._writer.submit(batch)

    def _settle(self, deadline: float | None, *, wait: bool = True) -> None:
        """Take the outcome of the batch handed to the writer (waiting for it, up to
        ``deadline``, unless ``wait`` is false) and act on it: acknowledge a commit;
        retry a transient failure here, paused, until it lands; drop a fenced batch."""
        if self._in_flight is None or self._writer is None:
            return
        if self._outcome is None:
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            self._outcome = self._writer.outcome(timeout if wait else 0.0)
            if self._outcome is None:
                if wait:
                    raise _ShutdownDeadlineError
                return
        batch, outcome = self._in_flight, self._outcome
        self._in_flight = self._outcome = None
        if isinstance(outcome, _Written):
            self._acknowledge(batch)
            self._recovered()
            return
        self._write_retrying(batch, deadline, outcome)

    def _still_ours(self, batch: _Batch) -> _Batch:
        """The part of ``batch`` whose partitions still have the claims it was cut under:
        a rebalance (or a reset) since then hands the rest to whoever reads it next."""
        keep = {key for key, claim in batch.claims.items() if self._claims.get(key) == claim}
        return batch if len(keep) == len(batch.claims) else batch.only(keep)

    def _write_retrying(
        self, batch: _Batch, deadline: float | None, failure: BaseException | None = None
    ) -> None:
        """Write ``batch`` on this thread until it commits, is fenced or is taken away;
        ``failure``: how its last attempt (by the writer) ended. A transient failure
        pauses consumption and retries with backoff; the writer is idle meanwhile."""
        attempt = 0
        while True:
            # A rebalance during a retry may have taken partitions away: drop their records.
            batch = self._still_ours(batch)
            if not batch.positions:
                # The batch is gone, and with it the reason to hold consumption.
                self._resume("the retried batch's partitions were revoked")
                return
            if failure is None:
                try:
                    self._write_and_commit(batch)
                except Exception as exc:
                    failure = exc
                else:
                    self._acknowledge(batch)
                    self._recovered()
                    return
            if isinstance(failure, Fenced):
                # Fenced is the database's answer: it is reachable.
                self._metrics.fenced.labels(self._sink.name).inc()
                logger.warning("%s; dropping the batch and re-reading", failure)
                self._after_fence(failure, batch)
                self._recovered()
                return
            # A schema registry or dead-letter outage is as transient as a database one.
            if not (is_transient(failure) or isinstance(failure, DeadLetterError | RegistryError)):
                raise failure
            if deadline is not None and self._clock() >= deadline:
                raise _ShutdownDeadlineError from failure
            self._wait_for_recovery(failure, attempt, deadline)
            attempt += 1
            failure = None

    def _decode(self, messages: list[Message]) -> tuple[list[Record[Any]], list[_Poison]]:
        records: list[Record[Any]] = []
        poison: list[_Poison] = []
        expected = self._sink.event_type
        deserialize = self._deserializer.deserialize
        rows = self._rows
        for message in messages:
            if rows is not None and (row := rows(message)) is not None:
                records.append(row)
                continue
            raw = RawRecord(
                topic=message.topic() or "",
                partition=message.partition() or 0,
                offset=message.offset() or 0,
                key=message.key(),
                value=message.value(),
                headers=headers_of(message),
                timestamp_ms=message.timestamp()[1],
            )
            if raw.value is None:
                poison.append(_Poison(raw, "EmptyValue", "record has no value"))
                continue
            try:
                event = deserialize(raw.value, raw.topic)
            except (DecodeError, UnknownSchemaError, ValidationError) as exc:
                poison.append(_Poison(raw, type(exc).__name__, str(exc)))
                continue
            if not isinstance(event, expected):
                poison.append(
                    _Poison(
                        raw,
                        "WrongEventType",
                        f"{self._sink.name} sink expects {expected.__name__}, "
                        f"got {type(event).__name__}",
                    )
                )
                continue
            records.append(Record(raw, event))
        return records, poison

    def _positions(self, messages: list[Message]) -> dict[TopicPartitionKey, int]:
        positions: dict[TopicPartitionKey, int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            if key in self._claims:
                positions[key] = max(positions.get(key, 0), (message.offset() or 0) + 1)
        return positions

    def _write_and_commit(self, batch: _Batch) -> _Written:
        """One Postgres transaction: rows, dead letters, offsets; commit.

        Runs on the writer thread (or the loop's, never both at once): it touches the
        database, the dead-letter producer, the sink and metrics — not the consumer, and
        not the loop's state; the batch carries the claims its offsets are fenced by.
        """
        if batch.decoded is None:
            batch.decoded = self._decode(batch.messages)
        records, poison = batch.decoded
        positions = batch.positions
        started = time.perf_counter()
        sink = self._sink.name
        with self._pool.connection() as conn, conn.transaction():
            written, rejected = self._write_isolating_poison(conn, records)
            dead = poison + [
                _Poison(record.raw, type(exc).__name__, f"{exc.sqlstate}: {exc}".strip())
                for record, exc in rejected
            ]
            for letter in dead:
                self._dead_letters.send(
                    letter.raw, error_class=letter.error_class, message=letter.message
                )
            self._dead_letters.flush(self._config.dead_letter_timeout_s)
            self._offsets.commit(conn, positions, batch.claims)
        self._dead_letters.forget_before(positions)
        self.batches_committed += 1
        good = len(records) - len(rejected)
        self._metrics.rows_written.labels(sink).inc(written)
        self._metrics.duplicates.labels(sink).inc(max(0, good - written))
        self._metrics.batch_size.labels(sink).observe(len(records) + len(poison))
        self._metrics.batch_seconds.labels(sink).observe(time.perf_counter() - started)
        for letter in dead:
            self._metrics.dead_letters.labels(sink, letter.error_class).inc()
        for topic in {t for t, _ in positions}:
            count = sum(1 for r in records if r.raw.topic == topic) + sum(
                1 for p in poison if p.raw.topic == topic
            )
            self._metrics.records.labels(sink, topic).inc(count)
        if records:
            oldest = min(r.event.occurred_at for r in records)
            self._metrics.event_time_lag.labels(sink).set(
                max(0.0, (datetime.now(UTC) - oldest).total_seconds())
            )
        logger.debug(
            "committed %d records (%d new rows, %d dead letters) up to %s",
            len(records) + len(poison),
            written,
            len(dead),
            positions,
        )
        return _Written(rows=written, dead_letters=len(dead))

    def _acknowledge(self, batch: _Batch) -> None:
        """The loop's side of a commit: remember the positions, tell Kafka (lag tools)."""
        positions = batch.positions
        self._stored.update(positions)
        # Postgres has the rows and the offsets: now tell Kafka too (for lag tooling).
        self._consumer.commit(
            offsets=[TopicPartition(t, p, offset) for (t, p), offset in positions.items()],
            asynchronous=True,
        )
        self._observe_lag(positions)

    def _write_isolating_poison(
        self, conn: psycopg.Connection[Any], records: list[Record[Any]]
    ) -> tuple[int, list[tuple[Record[Any], psycopg.Error]]]:
        """Write ``records``; on a data error, bisect in savepoints to find the bad rows."""
        if not records:
            return 0, []
        try:
            with conn.transaction():
                return self._sink.write(records, conn), []
        except psycopg.Error as exc:
            if not is_poison(exc):
                raise
            if len(records) == 1:
                return 0, [(records[0], exc)]
        middle = len(records) // 2
        left_rows, left_bad = self._write_isolating_poison(conn, records[:middle])
        right_rows, right_bad = self._write_isolating_poison(conn, records[middle:])
        return left_rows + right_rows, left_bad + right_bad

    # --- failures and recovery ---------------------------------------------------------
    def _failing(self, exc: BaseException, doing: str, *, since: float | None = None) -> None:
        """Note a transient failure (of work begun at ``since``, default now); past the
        retry deadline, say once that we are unready."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now if since is None else since
        if not self._reported_unready and now - self._failing_since > self._config.retry_deadline_s:
            self._reported_unready = True
            logger.error(
                "%s still failing after %.0fs (%s); reporting not ready, still retrying",
                doing,
                self._config.retry_deadline_s,
                exc,
            )

    def _database_answered(self) -> None:
        """A transaction went through: whatever was failing is not failing now."""
        if self._failing_since is not None and not self._paused:
            logger.info("database reachable again")
        self._failing_since = None
        self._reported_unready = False

    def _wait_for_recovery(self, exc: BaseException, attempt: int, deadline: float | None) -> None:
        self._metrics.retries.labels(self._sink.name).inc()
        if not self._paused:
            self._paused = True
            self._metrics.paused.labels(self._sink.name).set(1)
            self._consumer.pause(self._consumer.assignment())
            logger.warning("database unavailable (%s): paused consumption, retrying", exc)
        self._failing(exc, "batch")
        delay = self._config.backoff.delay(attempt)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - self._clock()))
        # Keep polling while we wait: it serves rebalance callbacks and keeps us in the
        # group. Partitions are paused, so nothing new is buffered.
        until = self._clock() + delay
        while True:
            remaining = until - self._clock()
            if remaining <= 0:
                break
            for message in self._consumer.consume(num_messages=1, timeout=min(remaining, 0.5)):
                self._accept(message)

    def _recovered(self) -> None:
        """The batch in hand was written (or fenced): the database answers."""
        self._database_answered()
        self._resume("database reachable again")

    def _resume(self, why: str) -> None:
        """End the pause that belonged to the batch in hand (written, fenced or revoked)."""
        if not self._paused:
            return
        self._paused = False
        self._metrics.paused.labels(self._sink.name).set(0)
        for (topic, partition), offset in self._rewind.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
        self._rewind.clear()
        # Refused partitions stay paused: they are not ours to read.
        self._consumer.resume(
            [p for p in self._consumer.assignment() if (p.topic, p.partition) in self._claims]
        )
        logger.info("%s: resumed consumption", why)

    # --- between batches -----------------------------------------------------------------
    def _maintain(self) -> None:
        """Between batches, every ``log_check_interval_s`` (sooner while failing): probe a
        database that failed, re-check refused partitions, and check every stored position
        against the log (at once when the broker reported a position out of range)."""
        now = self._clock()
        if now < self._next_maintenance:
            return
        interval = self._config.log_check_interval_s
        if self._failing_since is not None:
            interval = min(interval, self._config.backoff.cap_s)
        self._next_maintenance = now + interval
        # Checks move claims and positions: none may change under a batch being written.
        self._settle(deadline=None)
        if self._failing_since is not None:
            try:
                # A short wait: the loop (and a stop request) should not hang on a probe.
                with self._pool.connection(timeout=_PROBE_TIMEOUT_S) as conn:
                    conn.execute("SELECT 1")
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failing(exc, "database")
                return
            self._database_answered()
        try:
            if self._refused:
                self._recheck_refused()
            self._check_positions()
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The next round tries again; a database that stays away shows on the next
            # batch, a broker that stays away in consumption itself.
            logger.debug("checking offsets against the log failed (%s); trying later", exc)

    def _recheck_refused(self) -> None:
        """A refused partition comes back once its stored offset was moved (its generation
        changed, e.g. by ``sidestream replay --force``) to a position inside the log."""
        with self._pool.connection() as conn:
            current = self._offsets.generations(conn, self._refused)
        moved = [k for k, r in self._refused.items() if current.get(k) != r.claim.generation]
        if not moved:
            return
        claims, refused = self._claim_once(moved)
        for key, refusal in refused.items():
            self._refuse(key, refusal)  # still outside (a new line only if it moved)
        for key, claim in claims.items():
            if not self._start_at(key, claim, self._refused[key].condition):
                continue
            self._refused.pop(key, None)
            self._announced.pop(key, None)
            self._metrics.offset_out_of_range.remove(self._sink.name, key[0], str(key[1]))
            logger.info("%s[%d]: stored offset moved to %s; consuming", *key, claim.next_offset)

    def _check_positions(self) -> None:
        """Each consumed partition's stored position against its log: a topic deleted and
        recreated under a running worker (or its broker's data lost) leaves it past the
        new end, where a fetch may answer nothing at all."""
        positions = {key: self._stored[key] for key in self._claims if key in self._stored}
        if not positions:
            return
        conditions = self._log_bounds.out_of_range(positions)
        for key, condition in conditions.items():
            claim = self._claims[key]
            # Whatever was fetched for it came from a log we no longer trust.
            self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) != key]
            if self._config.offset_out_of_range is OutOfRangePolicy.REFUSE:
                self._claims.pop(key)
                self._stored.pop(key, None)
                self._consumer.pause([TopicPartition(*key)])
                self._refuse(key, _Refused(condition, claim))
                continue
            try:
                self._start_at(key, self._reset(condition, claim), condition)
            except Fenced as exc:
                logger.warning("%s; not resetting %s[%d]", exc, *key)

    def _start_at(self, key: TopicPartitionKey, claim: Claim, condition: OffsetOutOfRange) -> bool:
        """Consume ``key`` from its claimed offset (from the log's start if none).

        If the consumer cannot move there yet, the partition is held (paused, among the
        refused, with a generation no row has) so the next round claims it and tries again.
        """
        offset = claim.next_offset if claim.next_offset is not None else OFFSET_BEGINNING
        partition = TopicPartition(key[0], key[1], offset)
        try:
            self._consumer.seek(partition)
        except KafkaException as exc:
            self._consumer.pause([partition])
            self._claims.pop(key, None)
            self._stored.pop(key, None)
            self._refused[key] = _Refused(condition, Claim(claim.next_offset, -1))
            logger.warning("%s[%d]: cannot move to offset %d yet (%s); retrying", *key, offset, exc)
            return False
        self._claims[key] = claim
        if claim.next_offset is not None:
            self._stored[key] = claim.next_offset
        self._consumer.resume([partition])
        return True

    def _after_fence(self, exc: Fenced, batch: _Batch) -> None:
        for key in exc.partitions:
            # Another worker claimed it: ours no more (unless we claimed it again since).
            if self._claims.get(key) == batch.claims.get(key):
                self._claims.pop(key, None)
        # Partitions still ours were rolled back with the batch: read them again, from its
        # first record. What was read after it (buffered, or cut and waiting for the
        # writer) goes too, so that nothing commits ahead of the re-read records.
        first: dict[TopicPartitionKey, int] = {}
        for message in batch.messages:
            key = (message.topic() or "", message.partition() or 0)
            if key in self._claims and self._claims[key] == batch.claims.get(key):
                first[key] = min(first.get(key, message.offset() or 0), message.offset() or 0)
        if not first:
            return
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in first]
        if self._waiting is not None:
            waiting = self._waiting.only(set(self._waiting.claims) - set(first))
            self._waiting = waiting if waiting.positions else None
        for (topic, partition), offset in first.items():
            # A rewind noted while paused lies past the batch: this seek replaces it.
            self._rewind.pop((topic, partition), None)
            self._consumer.seek(TopicPartition(topic, partition, offset))

    # --- lag -----------------------------------------------------------------------------
    def _observe_lag(self, positions: dict[TopicPartitionKey, int]) -> None:
        for (topic, partition), position in positions.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                continue
            # Some brokers report the high watermark short of the last batch: clamp.
            self._metrics.lag.labels(self._sink.name, topic, str(partition)).set(
                max(0, high - position)
            )
            self._lag_series.add((topic, partition))
