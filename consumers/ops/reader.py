"""Reading a topic without joining a consumer group.

Three questions the operator tools ask of a partition, each answered by *reading* rather
than trusting one broker answer:

- :meth:`TopicReader.peek` — the first message at or after an offset (its timestamp);
- :meth:`TopicReader.ends` — where the partition really ends: some brokers report the
  high watermark short (the local tansu reports the start of the last batch), so the
  reported end is confirmed by fetching from it until the client signals
  end-of-partition, whose offset is the true end;
- :meth:`TopicReader.scan` — every message of an offset range (the dead-letter tools).

The reader's consumer only ever uses ``assign``: it never subscribes or commits, so its
group id never appears on the broker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumers.log_range import OffsetOutOfRange
from consumers.offsets import TopicPartitionKey
from consumers.ops.errors import (
    BrokerError,
    PartitionNotFoundError,
    ReadTimeoutError,
    TopicNotFoundError,
)
from runtime import Settings
from runtime.clients import kafka_consumer

logger = logging.getLogger(__name__)

Key = TopicPartitionKey


@dataclass(frozen=True, slots=True)
class Peek:
    """The first message found at or after a requested offset."""

    offset: int
    timestamp_ms: int | None  # None: the broker keeps no timestamp for it


@dataclass(frozen=True, slots=True)
class EndOffsets:
    """Where a partition starts and ends."""

    low: int
    reported: int  # the high watermark the broker reports (ListOffsets)
    end: int  # the next offset to be written, confirmed by reading to the end
    verified: bool = True  # False: reading timed out; ``end`` is the best seen

    @property
    def short(self) -> bool:
        """The broker's reported end is behind the real one."""
        return self.end > self.reported


def _key(message: Message) -> Key | None:
    topic, partition = message.topic(), message.partition()
    if topic is None or partition is None:
        return None  # a client-wide event (e.g. all brokers down), not a partition's
    return (topic, partition)


class TopicReader:
    """Reads partitions by assignment; every read is bounded by ``timeout_s`` of no progress.

    Args:
        consumer: a consumer with ``enable.partition.eof=true`` and
            ``auto.offset.reset=error``, not subscribed to anything (see
            :meth:`from_settings`); the reader closes it.
        timeout_s: how long a read may go without any progress before it gives up.
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._timeout_s = timeout_s
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 10.0) -> TopicReader:
        consumer = kafka_consumer(
            settings,
            f"sidestream.ops.reader.{uuid.uuid4().hex[:8]}",
            **{
                "enable.partition.eof": True,
                # Out of range must be an answer, not a silent jump to the other end.
                "auto.offset.reset": "error",
                # Single-message reads: a fetch at the end must not idle the default 500 ms.
                "fetch.wait.max.ms": 10,
            },
        )
        return cls(consumer=consumer, timeout_s=timeout_s)

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- metadata ------------------------------------------------------------------------
    def partitions(self, topic: str, wanted: Iterable[int] | None = None) -> list[int]:
        """The topic's partitions (or ``wanted``, checked to exist), sorted."""
        try:
            metadata = self._consumer.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise BrokerError(f"metadata of {topic}", exc) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise TopicNotFoundError(topic)
        existing = sorted(found.partitions)
        if wanted is None:
            return existing
        chosen = sorted(set(wanted))
        missing = set(chosen) - set(existing)
        if missing:
            raise PartitionNotFoundError(topic, missing, existing)
        return chosen

    def watermarks(self, keys: Iterable[Key]) -> dict[Key, tuple[int, int]]:
        """(low, high) as the broker reports them — the high one may read short."""
        marks = {}
        for topic, partition in keys:
            try:
                marks[(topic, partition)] = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._timeout_s, cached=False
                )
            except KafkaException as exc:
                raise BrokerError(f"watermarks of {topic}[{partition}]", exc) from exc
        return marks

    def broker_offsets_for_time(self, keys: Iterable[Key], timestamp_ms: int) -> dict[Key, int]:
        """The broker's own answer to "first offset with timestamp ≥ t" (-1: none).

        Unverified: :func:`consumers.ops.timeindex.offsets_for_time` checks it.
        """
        wanted = [TopicPartition(t, p, timestamp_ms) for t, p in keys]
        if not wanted:
            return {}
        try:
            answer = self._consumer.offsets_for_times(wanted, timeout=self._timeout_s)
        except KafkaException as exc:
            logger.warning("offsets_for_times failed (%s); falling back to reading", exc)
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in answer if tp.error is None}

    # --- reading -------------------------------------------------------------------------
    def peek(self, positions: Mapping[Key, int]) -> dict[Key, Peek | None]:
        """For each partition, the first message at or after its offset (None: none yet).

        Raises:
            ReadTimeoutError: a partition gave no answer within the timeout.
        """
        found: dict[Key, Peek | None] = {}
        # Past the end some brokers answer nothing at all (tansu sends neither an error
        # nor end-of-partition): offsets at or past the reported end are checked first.
        marks = self.watermarks(positions)
        suspect = {key: marks[key] for key, offset in positions.items() if offset >= marks[key][1]}
        ends = self._confirm_ends(suspect) if suspect else {}
        wanted = {}
        for key, offset in positions.items():
            if key in ends and offset >= ends[key].end:
                found[key] = None
            else:
                wanted[key] = offset

        def handle(key: Key, message: Message) -> bool:
            if message.error() is None:
                kind, stamp = message.timestamp()
                found[key] = Peek(message.offset() or 0, stamp if kind and stamp >= 0 else None)
            else:  # end of partition, or offset out of range: nothing there
                found[key] = None
            return True

        unfinished = self._read(wanted, handle)
        if unfinished:
            raise ReadTimeoutError(
                next(iter(unfinished))[0], (p for _, p in unfinished), self._timeout_s
            )
        return found

    def out_of_range(self, positions: Mapping[Key, int]) -> dict[Key, OffsetOutOfRange]:
        """The positions before their partition's start or past its confirmed end.

        Only positions beyond the reported high watermark are confirmed by reading (it
        may read short); a position exactly at the end is in range. The batch runtime
        calls this on every assignment (:class:`consumers.log_range.LogBounds`).

        Raises:
            ConnectionError: the broker did not answer (retry later).
            TimeoutError: a suspect partition's end could not be confirmed in time.
        """
        try:
            marks = self.watermarks(positions)
            suspect = {k: marks[k] for k, offset in positions.items() if offset > marks[k][1]}
            ends = self._confirm_ends(suspect) if suspect else {}
        except (BrokerError, KafkaException) as exc:
            raise ConnectionError(str(exc)) from exc
        unconfirmed = [key for key, end in ends.items() if not end.verified]
        if unconfirmed:
            raise TimeoutError(
                str(
                    ReadTimeoutError(
                        unconfirmed[0][0], (p for _, p in unconfirmed), self._timeout_s
                    )
                )
            )
        found = {}
        for key, offset in positions.items():
            low, high = marks[key]
            end = ends[key].end if key in ends else high
            if offset < low or offset > end:
                found[key] = OffsetOutOfRange(key[0], key[1], offset, low, end)
        return found

    def ends(self, keys: Iterable[Key]) -> dict[Key, EndOffsets]:
        """Low watermark, reported high watermark and the true end of each partition."""
        return self._confirm_ends(self.watermarks(keys))

    def _confirm_ends(self, marks: Mapping[Key, tuple[int, int]]) -> dict[Key, EndOffsets]:
        seen: dict[Key, int] = {}
        confirmed: dict[Key, int] = {}

        def handle(key: Key, message: Message) -> bool:
            error = message.error()
            if error is None:
                seen[key] = max(seen.get(key, 0), (message.offset() or 0) + 1)
                return False
            if error.code() == KafkaError._PARTITION_EOF:
                confirmed[key] = message.offset() or 0
            return True  # any other partition error: keep the best we have

        unfinished = self._read({key: high for key, (_low, high) in marks.items()}, handle)
        ends = {}
        for key, (low, high) in marks.items():
            best = max(high, seen.get(key, high))
            end = confirmed.get(key, best)
            ends[key] = EndOffsets(low, high, max(end, best), key in confirmed)
            if key in unfinished:
                logger.warning("end of %s[%d] not confirmed; using %d", *key, best)
        return ends

    def scan(self, ranges: Mapping[Key, tuple[int, int]]) -> Iterator[Message]:
        """Every message with ``start <= offset < end`` of each partition, partition by
        partition in offset order (partitions interleave).

        Raises:
            ReadTimeoutError: a partition stopped yielding before its end.
        """
        todo = {key: span for key, span in ranges.items() if span[0] < span[1]}
        batch: list[Message] = []

        def handle(key: Key, message: Message) -> bool:
            if message.error() is not None:
                return True  # end of partition (or out of range): nothing more to read
            offset = message.offset() or 0
            if offset < todo[key][1]:
                batch.append(message)
            return offset + 1 >= todo[key][1]

        reading = self._reading({key: start for key, (start, _end) in todo.items()}, handle)
        for _ in reading:
            yield from batch
            batch.clear()
        unfinished = reading.unfinished
        yield from batch
        if unfinished:
            raise ReadTimeoutError(
                next(iter(unfinished))[0], (p for _, p in unfinished), self._timeout_s
            )

    # --- the one read loop ---------------------------------------------------------------
    def _read(
        self, positions: Mapping[Key, int], handle: Callable[[Key, Message], bool]
    ) -> set[Key]:
        reading = self._reading(positions, handle)
        for _ in reading:
            pass
        return reading.unfinished

    def _reading(
        self, positions: Mapping[Key, int], handle: Callable[[Key, Message], bool]
    ) -> _Reading:
        return _Reading(self._consumer, dict(positions), handle, self._timeout_s, self._clock)


def _stale(message: Message, position: int) -> bool:
    """A message or end-of-partition event from before the assignment moved."""
    error = message.error()
    if error is not None and error.code() != KafkaError._PARTITION_EOF:
        return False
    return (message.offset() or 0) < position


class _Reading:
    """One assignment: feeds each partition's messages to ``handle`` until it returns True
    for that partition, or until nothing happened for ``timeout_s``. Iterating yields after
    every ``consume`` call (so :meth:`TopicReader.scan` can stream)."""

    def __init__(
        self,
        consumer: Consumer,
        positions: dict[Key, int],
        handle: Callable[[Key, Message], bool],
        timeout_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._consumer = consumer
        self._positions = positions
        self._handle = handle
        self._timeout_s = timeout_s
        self._clock = clock
        self.unfinished: set[Key] = set(positions)

    def __iter__(self) -> Iterator[None]:
        if not self.unfinished:
            return
        consumer = self._consumer
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._positions.items()])
        try:
            last_progress = self._clock()
            while self.unfinished and self._clock() - last_progress < self._timeout_s:
                for message in consumer.consume(num_messages=1000, timeout=0.05):
                    key = _key(message)
                    if key is None:
                        error = message.error()
                        if error is not None and error.fatal():
                            raise BrokerError("reading", error)
                        logger.debug("reader: %s", error)
                        continue
                    if key not in self.unfinished:
                        continue  # a finished partition's prefetched leftovers
                    if _stale(message, self._positions[key]):
                        continue
                    last_progress = self._clock()
                    if self._handle(key, message):
                        self.unfinished.discard(key)
                        consumer.pause([TopicPartition(*key)])
                yield None
        finally:
            # A paused partition stays paused across assignments: resume before leaving.
            consumer.resume([TopicPartition(t, p) for t, p in self._positions])
            consumer.unassign()
