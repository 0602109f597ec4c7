"""Dead letters as an operator sees them: one record of ``<topic>.dlq`` with its story
decoded (:class:`DeadLetter`), the filter that picks some (:class:`LetterFilter`), and
reading a whole dead-letter topic.

A dead letter carries the original key, value and headers plus ``sidestream.dlq.*``
headers (source position, error class and message, worker, time). :func:`read_dead_letters`
reads the whole dead-letter topic (to its true end, captured when reading starts) into
:class:`DeadLetter` values. A record that was redriven carries ``sidestream.redrive.*``
headers as well (:mod:`consumers.ops.redrive`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Message

from consumers.dead_letters import DLQ_SUFFIX, HEADER_PREFIX, TRUNCATED_HEADER
from consumers.ops.reader import TopicReader
from consumers.ops.timeindex import parse_time
from consumers.records import Headers, headers_of

REDRIVE_PREFIX = "sidestream.redrive."
REDRIVE_COUNT_HEADER = REDRIVE_PREFIX + "count"
REDRIVE_FROM_HEADER = REDRIVE_PREFIX + "from"


_Source = tuple[str, int, int, bytes]  # source topic, partition, offset, value digest


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _int(value: str | bytes | None) -> int | None:
    text = _text(value)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a dead-letter topic, with its story decoded."""

    dlq_topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers  # the original ones (no sidestream.dlq.* / sidestream.redrive.*)
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    error_class: str
    error_message: str
    dead_lettered_at_ms: int  # the sidestream.dlq.time header, else the record's timestamp
    redrive_count: int  # sidestream.redrive.count carried by the record (0: never)
    truncated: bool = False  # a reference to a record too large to copy: not redrivable

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        topic = message.topic() or ""
        original: Headers = []
        ours: dict[str, str | bytes | None] = {}
        for name, value in headers_of(message):
            if name.startswith((HEADER_PREFIX, REDRIVE_PREFIX)):
                ours[name] = value
            else:
                original.append((name, value))
        _kind, stamp = message.timestamp()
        stamp = max(stamp, 0)
        fallback_source = topic[: -len(DLQ_SUFFIX)] if topic.endswith(DLQ_SUFFIX) else topic
        return cls(
            dlq_topic=topic,
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            timestamp_ms=stamp,
            key=message.key(),
            value=message.value(),
            headers=original,
            source_topic=_text(ours.get(HEADER_PREFIX + "source.topic")) or fallback_source,
            source_partition=_int(ours.get(HEADER_PREFIX + "source.partition")),
            source_offset=_int(ours.get(HEADER_PREFIX + "source.offset")),
            error_class=_text(ours.get(HEADER_PREFIX + "error.class")) or "Unknown",
            error_message=_text(ours.get(HEADER_PREFIX + "error.message")) or "",
            dead_lettered_at_ms=_int(ours.get(HEADER_PREFIX + "time")) or stamp,
            redrive_count=_int(ours.get(REDRIVE_COUNT_HEADER)) or 0,
            truncated=_text(ours.get(TRUNCATED_HEADER)) == "true",
        )

    @property
    def position(self) -> tuple[int, int]:
        return (self.partition, self.offset)

    @property
    def identity(self) -> tuple[str, int, int]:
        return (self.dlq_topic, self.partition, self.offset)

    @property
    def digest(self) -> bytes:
        """sha256 of the value: with the source position, identifies the source record."""
        return hashlib.sha256(self.value or b"").digest()

    @property
    def source(self) -> _Source | None:
        """The source record (None when the dead letter does not say where it came from)."""
        if self.source_partition is None or self.source_offset is None:
            return None
        return (self.source_topic, self.source_partition, self.source_offset, self.digest)

    @property
    def where(self) -> str:
        return f"{self.dlq_topic}[{self.partition}]@{self.offset}"

    @property
    def dead_lettered_at(self) -> datetime:
        return datetime.fromtimestamp(self.dead_lettered_at_ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Dead-letter offsets ``first..last`` (inclusive) of one partition."""

    partition: int
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> OffsetRange:
        """``P:O`` or ``P:A-B`` (partition, offset or inclusive range)."""
        try:
            partition, _, offsets = text.partition(":")
            first, _, last = offsets.partition("-")
            parsed = cls(int(partition), int(first), int(last or first))
        except ValueError:
            raise ValueError(
                f"{text!r}: expected PARTITION:OFFSET or PARTITION:FIRST-LAST"
            ) from None
        if parsed.first > parsed.last or parsed.first < 0 or parsed.partition < 0:
            raise ValueError(f"{text!r}: not a valid range")
        return parsed

    def __contains__(self, position: object) -> bool:
        if not isinstance(position, tuple):
            return False
        partition, offset = position
        return bool(partition == self.partition and self.first <= offset <= self.last)


@dataclass(frozen=True, slots=True)
class LetterFilter:
    """Which dead letters to act on; every given criterion must hold (none: all)."""

    error_classes: frozenset[str] = frozenset()
    since: datetime | None = None  # dead-lettered at or after
    until: datetime | None = None  # dead-lettered before
    offsets: tuple[OffsetRange, ...] = field(default=())

    @classmethod
    def parse(
        cls,
        *,
        error_classes: Iterable[str] = (),
        since: str | None = None,
        until: str | None = None,
        offsets: Iterable[str] = (),
        now: datetime | None = None,
    ) -> LetterFilter:
        """A filter from an operator's text: times as ISO 8601 or relative (``2h``),
        offsets as ``P:O`` or ``P:A-B``.

        Raises:
            ValueError: a time or an offset range that does not parse.
        """
        moment = now or datetime.now(UTC)
        return cls(
            error_classes=frozenset(c for c in error_classes if c),
            since=parse_time(since, now=moment) if since else None,
            until=parse_time(until, now=moment) if until else None,
            offsets=tuple(OffsetRange.parse(text) for text in offsets if text),
        )

    def matches(self, letter: DeadLetter) -> bool:
        if self.error_classes and letter.error_class not in self.error_classes:
            return False
        at = letter.dead_lettered_at
        if self.since is not None and at < self.since:
            return False
        if self.until is not None and at >= self.until:
            return False
        return not self.offsets or any(letter.position in r for r in self.offsets)


def read_dead_letters(
    reader: TopicReader, dlq_topic: str, letter_filter: LetterFilter | None = None
) -> Iterator[DeadLetter]:
    """The dead letters of ``dlq_topic`` up to its end when reading starts, filtered."""
    keys = [(dlq_topic, p) for p in reader.partitions(dlq_topic)]
    ends = reader.ends(keys)
    chosen = letter_filter or LetterFilter()
    for message in reader.scan({key: (ends[key].low, ends[key].end) for key in keys}):
        letter = DeadLetter.from_message(message)
        if chosen.matches(letter):
            yield letter
