"""The one batch loop every sink runs in.

Lifecycle of a batch:

1. **poll** — ``consume(num_messages, timeout)`` until the batch holds
   ``max_records`` records or ``max_wait`` has passed since its first record;
2. **decode** — bytes → typed events (both wire formats, writer → reader schema);
   undecodable records are set aside as poison;
3. **write** — one Postgres transaction: the sink writes its rows (a row the database
   rejects for its data is isolated by bisecting the batch in savepoints), dead letters
   are flushed to Kafka, then the batch's offsets are stored in ``consumer_offsets``,
   fenced by the generation claimed on assignment; commit;
4. **acknowledge** — only after the Postgres commit, offsets are also committed to Kafka
   (asynchronously) so standard lag tools see progress.

Postgres is the source of truth for positions: on assignment the runtime claims the
partitions in Postgres and starts from the offsets stored there. While Postgres is
unreachable the runtime pauses its partitions (holding one batch, no more) and retries
with backoff until it returns. On SIGTERM it stops polling, finishes the batch it holds,
commits and leaves the group within a deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from psycopg_pool import ConnectionPool

from consumers.dead_letters import DeadLetterError, DeadLetters
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Claim, Fenced, PostgresOffsets, TopicPartitionKey
from consumers.records import RawRecord, Record, headers_of
from consumers.retry import Backoff, is_poison, is_transient
from consumers.sink import Sink
from runtime import Settings
from schemas import (
    DecodeError,
    EventDeserializer,
    RegistryError,
    UnknownSchemaError,
    ValidationError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How batches are cut, retried and drained."""

    max_records: int = 5000
    max_wait_s: float = 0.2
    retry_deadline_s: float = 30.0
    shutdown_deadline_s: float = 20.0
    dead_letter_timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchConfig:
        return cls(
            max_records=settings.consumer_batch_max_records,
            max_wait_s=settings.consumer_batch_max_wait_ms / 1000,
            retry_deadline_s=settings.consumer_retry_deadline_s,
            shutdown_deadline_s=settings.consumer_shutdown_deadline_s,
        )


class ExitStatus(IntEnum):
    """The worker's exit code: did it drain cleanly?"""

    DRAINED = 0
    ABANDONED = 1  # the deadline passed with a batch unwritten; it will be re-read


@dataclass(slots=True)
class _Poison:
    raw: RawRecord
    error_class: str
    message: str


class _ShutdownDeadlineError(Exception):
    """The shutdown deadline passed while a batch was still unwritten."""


class BatchRuntime:
    """Consumes ``topics`` as ``group_id`` and feeds batches to ``sink``.

    All resources are injected: the consumer (not yet subscribed), the Postgres pool
    (whose search path selects the schema), the dead-letter producer, the deserializer,
    the metrics and a clock.
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
        self._metrics = metrics
        self._config = config or BatchConfig()
        self._clock = clock
        self._offsets = PostgresOffsets(group_id, owner=worker_id)
        # A sink may read messages straight into rows (consumers.rows); what its row decoder
        # does not take is decoded below into events, as for every other sink.
        row_decoder = getattr(sink, "row_decoder", None)
        self._rows = None if row_decoder is None else row_decoder(deserializer)
        self._claims: dict[TopicPartitionKey, Claim] = {}
        self._buffer: list[Message] = []
        self._batch_opened_at: float | None = None
        self._paused = False
        # While paused, messages already fetched may still arrive: they are dropped and
        # the partition is rewound to the first of them when consumption resumes.
        self._rewind: dict[TopicPartitionKey, int] = {}
        self._healthy = True
        self._lag_series: set[TopicPartitionKey] = set()
        self._stop_requested = threading.Event()
        self.batches_committed = 0

    # --- public --------------------------------------------------------------------------
    def ready(self) -> bool:
        """Readiness: subscribed and not stuck behind an unreachable database."""
        return self._healthy and not self._stop_requested.is_set()

    @property
    def assignment(self) -> list[TopicPartitionKey]:
        return sorted(self._claims)

    def run(self, stop: threading.Event) -> ExitStatus:
        """Consume until ``stop`` is set, then drain within the shutdown deadline."""
        self._stop_requested = stop
        self._consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        status = ExitStatus.DRAINED
        try:
            while not stop.is_set():
                self._poll()
                if self._batch_due():
                    self._process_batch(deadline=None)
            deadline = self._clock() + self._config.shutdown_deadline_s
            if self._buffer:
                logger.info("draining: writing the last %d records", len(self._buffer))
                try:
                    self._process_batch(deadline=deadline)
                except _ShutdownDeadlineError:
                    logger.error("shutdown deadline passed; the unwritten batch will be re-read")
                    status = ExitStatus.ABANDONED
        finally:
            # close() leaves the group at once, so partitions move without waiting for
            # the session timeout. Nothing is committed here: Postgres has the offsets.
            self._consumer.close()
        return status

    # --- rebalance callbacks (run inside consume()) -----------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels(self._sink.name, "assign").inc()
        keys = [(p.topic, p.partition) for p in partitions]
        claims = self._claim(keys)
        for partition in partitions:
            claim = claims[(partition.topic, partition.partition)]
            if claim.next_offset is not None:
                partition.offset = claim.next_offset
        self._claims.update(claims)
        consumer.assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        logger.info(
            "assigned %s",
            ", ".join(f"{p.topic}[{p.partition}]@{p.offset}" for p in partitions) or "nothing",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._metrics.rebalances.labels(self._sink.name, "revoke").inc()
        revoked = {(p.topic, p.partition) for p in partitions}
        for key in revoked:
            self._claims.pop(key, None)
            self._rewind.pop(key, None)
            if key in self._lag_series:
                self._lag_series.discard(key)
                self._metrics.lag.remove(self._sink.name, key[0], str(key[1]))
        # Records of revoked partitions are abandoned, not written: the new owner reads
        # them again from the offsets stored in Postgres.
        self._buffer = [m for m in self._buffer if (m.topic(), m.partition()) not in revoked]
        consumer.unassign()
        logger.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in sorted(revoked)))

    def _claim(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, Claim]:
        attempt, started = 0, self._clock()
        while True:
            try:
                with self._pool.connection() as conn, conn.transaction():
                    return self._offsets.claim(conn, keys)
            except Exception as exc:
                if not is_transient(exc) or self._clock() - started > self._config.retry_deadline_s:
                    raise
                delay = self._config.backoff.delay(attempt)
                logger.warning("claiming partitions failed (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                attempt += 1

    # --- polling -----------------------------------------------------------------------
    def _poll(self) -> None:
        if self._batch_opened_at is None:
            timeout = self._config.max_wait_s
        else:
            timeout = max(0.0, self._batch_opened_at + self._config.max_wait_s - self._clock())
        wanted = max(1, self._config.max_records - len(self._buffer))
        for message in self._consumer.consume(num_messages=wanted, timeout=timeout):
            self._accept(message)

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise KafkaException(error)
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
        if len(self._buffer) >= self._config.max_records:
            return True
        opened = self._batch_opened_at or self._clock()
        return self._clock() - opened >= self._config.max_wait_s

    # --- one batch ---------------------------------------------------------------------
    def _process_batch(self, deadline: float | None) -> None:
        messages, self._buffer, self._batch_opened_at = self._buffer, [], None
        decoded: tuple[list[Record[Any]], list[_Poison]] | None = None
        attempt, failing_since = 0, None
        while True:
            # A rebalance during a retry may have taken partitions away: drop their records.
            messages = [m for m in messages if (m.topic(), m.partition()) in self._claims]
            positions = self._positions(messages)
            if not positions:
                return
            try:
                if decoded is None:
                    decoded = self._decode(messages)
                records, poison = decoded
                records = [r for r in records if (r.raw.topic, r.raw.partition) in self._claims]
                poison = [p for p in poison if (p.raw.topic, p.raw.partition) in self._claims]
                self._write_and_commit(records, poison, positions)
            except Fenced as exc:
                self._metrics.fenced.labels(self._sink.name).inc()
                logger.warning("%s; dropping the batch and re-reading", exc)
                self._after_fence(exc, messages)
                return
            except Exception as exc:
                # A schema registry or dead-letter outage is as transient as a database one.
                if not (is_transient(exc) or isinstance(exc, DeadLetterError | RegistryError)):
                    raise
                failing_since = failing_since or self._clock()
                if deadline is not None and self._clock() >= deadline:
                    raise _ShutdownDeadlineError from exc
                self._wait_for_recovery(exc, attempt, failing_since, deadline)
                attempt += 1
                continue
            self._recovered()
            return

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

    def _write_and_commit(
        self,
        records: list[Record[Any]],
        poison: list[_Poison],
        positions: dict[TopicPartitionKey, int],
    ) -> None:
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
            self._offsets.commit(conn, positions, self._claims)
        # Postgres has the rows and the offsets: now tell Kafka too (for lag tooling).
        self._consumer.commit(
            offsets=[TopicPartition(t, p, offset) for (t, p), offset in positions.items()],
            asynchronous=True,
        )
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
        self._observe_lag(records, positions)
        logger.debug(
            "committed %d records (%d new rows, %d dead letters) up to %s",
            len(records) + len(poison),
            written,
            len(dead),
            positions,
        )

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
    def _wait_for_recovery(
        self, exc: BaseException, attempt: int, failing_since: float, deadline: float | None
    ) -> None:
        self._metrics.retries.labels(self._sink.name).inc()
        if not self._paused:
            self._paused = True
            self._metrics.paused.labels(self._sink.name).set(1)
            self._consumer.pause(self._consumer.assignment())
            logger.warning("database unavailable (%s): paused consumption, retrying", exc)
        if self._healthy and self._clock() - failing_since > self._config.retry_deadline_s:
            self._healthy = False
            logger.error(
                "batch still failing after %.0fs (%s); reporting not ready, still retrying",
                self._config.retry_deadline_s,
                exc,
            )
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
        if not self._paused:
            return
        self._paused = False
        self._healthy = True
        self._metrics.paused.labels(self._sink.name).set(0)
        for (topic, partition), offset in self._rewind.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
        self._rewind.clear()
        self._consumer.resume(self._consumer.assignment())
        logger.info("database reachable again: resumed consumption")

    def _after_fence(self, exc: Fenced, messages: list[Message]) -> None:
        for key in exc.partitions:
            self._claims.pop(key, None)
        # Partitions still ours were rolled back with the batch: read them again.
        first: dict[TopicPartitionKey, int] = {}
        for message in messages:
            key = (message.topic() or "", message.partition() or 0)
            if key in self._claims:
                first[key] = min(first.get(key, message.offset() or 0), message.offset() or 0)
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))

    # --- lag -----------------------------------------------------------------------------
    def _observe_lag(
        self, records: list[Record[Any]], positions: dict[TopicPartitionKey, int]
    ) -> None:
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
        if records:
            oldest = min(r.event.occurred_at for r in records)
            self._metrics.event_time_lag.labels(self._sink.name).set(
                max(0.0, (datetime.now(UTC) - oldest).total_seconds())
            )
