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
   see progress, and (at most once per ``memory_release_interval_s``, and once when the
   loop goes idle) the C heap's free memory goes back to the OS (:mod:`runtime.memory`).
   A failed write comes back here: a transient one is retried on the loop's thread,
   paused, as before (the next batch waits, cut, until it lands); ``Fenced`` drops the
   batch and rewinds what is still ours; anything else ends the worker.

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

Where the pieces live: this module holds :class:`BatchRuntime` — the loop, the rebalance
callbacks, cutting a batch and handing it over, acting on its outcome, and the checks
between batches — and :class:`BatchConfig`. Its other methods come from one mixin per
concept, over the state declared in :mod:`consumers.batch_state`: polling into the
buffer and when a batch is due (:mod:`consumers.batch_polling`, step 1), decoding and the
one transaction (:mod:`consumers.batch_commit`, steps 2 and 4), pause and retry
(:mod:`consumers.batch_recovery`), claiming and the offset-range check
(:mod:`consumers.batch_claims`). The writer thread and the batch it is handed are in
:mod:`consumers.batch_writer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from psycopg_pool import ConnectionPool

from consumers.batch_claims import _Claiming, _Refused
from consumers.batch_commit import _Committing
from consumers.batch_recovery import _StopRequestedError
from consumers.batch_writer import _Batch, _Writer, _Written
from consumers.dead_letters import DeadLetterError, DeadLetters
from consumers.log_range import LogBounds, OffsetOutOfRange, OutOfRangePolicy
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Claim, Fenced, PostgresOffsets, TopicPartitionKey
from consumers.sink import Sink
from runtime import Settings
from runtime.lifecycle import ExitStatus as ExitStatus  # where its callers import it from
from runtime.memory import FreeMemoryReleaser, release_free_memory
from runtime.retry import Backoff, is_transient
from runtime.settings import setting_default
from schemas import (
    EventDeserializer,
    RegistryError,
)

logger = logging.getLogger(__name__)

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
    #: Hand the C heap's free memory back to the OS at most this often, after a committed
    #: batch, and once when idle (:class:`runtime.memory.FreeMemoryReleaser`); 0 = never.
    memory_release_interval_s: float = setting_default("consumer_memory_release_interval_s")

    def __post_init__(self) -> None:
        if self.memory_release_interval_s < 0:
            raise ValueError(
                "memory_release_interval_s must be >= 0 (0 = never), "
                f"got {self.memory_release_interval_s}"
            )

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
            memory_release_interval_s=settings.consumer_memory_release_interval_s,
        )


class _ShutdownDeadlineError(Exception):
    """The shutdown deadline passed while a batch was still unwritten."""


class BatchRuntime(_Claiming, _Committing):
    """Consumes ``topics`` as ``group_id`` and feeds batches to ``sink``.

    All resources are injected: the consumer (not yet subscribed), the Postgres pool
    (whose search path selects the schema), the dead-letter producer, the deserializer,
    what reads the log's bounds, the metrics, a clock, and what hands free memory back to
    the OS (``release_memory``, glibc's ``malloc_trim`` by default; see
    :mod:`runtime.memory`).
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
        release_memory: Callable[[], bool] = release_free_memory,
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
        # The prefetch (librdkafka's broker thread) and the COPY buffers (the writer's)
        # are freed into glibc arenas that keep them resident: handed back after batches.
        self._memory = FreeMemoryReleaser(
            self._config.memory_release_interval_s, release=release_memory, clock=clock
        )
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
    def memory_releases(self) -> int:
        """How many times free memory was handed back to the OS (:mod:`runtime.memory`)."""
        return self._memory.releases

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
                elif not self._buffer and self._in_flight is None:
                    self._memory.when_idle()  # nothing at hand, nothing being written
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

    def _positions(self, messages: list[Message]) -> dict[TopicPartitionKey, int]:
        positions: dict[TopicPartitionKey, int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            if key in self._claims:
                positions[key] = max(positions.get(key, 0), (message.offset() or 0) + 1)
        return positions

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
        self._memory.after_batch()

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
                with self._connection(_PROBE_TIMEOUT_S) as conn:
                    conn.execute("SELECT 1")
            except _StopRequestedError:
                return  # the loop ends next; nothing was being done
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
        except _StopRequestedError:
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The next round tries again; a database that stays away shows on the next
            # batch, a broker that stays away in consumption itself.
            logger.debug("checking offsets against the log failed (%s); trying later", exc)

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
