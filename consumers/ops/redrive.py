"""Dead-letter redrive: look at ``<topic>.dlq``, then send chosen records back.

A dead letter carries the original key, value and headers plus ``sidestream.dlq.*``
headers (source position, error class and message, worker, time). :func:`read_dead_letters`
reads the whole dead-letter topic (to its true end, captured when reading starts) into
:class:`DeadLetter` values; :func:`summarize` groups them by error class.

:class:`Redriver` sends the chosen ones back to their source topic and partition with the
original key, value and headers (``sidestream.dlq.*`` removed) plus
``sidestream.redrive.count`` (one more than the record carried) and
``sidestream.redrive.from``. A record whose count has reached ``max_redrives`` is
skipped and reported: it came back to the dead-letter topic that many times already.

A dead letter that is a truncated reference (``sidestream.dlq.truncated``: the record
was too large for the dead-letter topic) holds only the first KiB of the value: it is
never redriven, but reported with where the full record is, to replay from there.

A source record dead-lettered twice (a replay reads it again, or a worker crashed between
dead-lettering and committing) leaves two dead letters with the same source position and
value: only the first is redriven, the others are reported as repeats.

Exactly once per dead letter: each chunk claims its records in ``dlq_redrives``
(``INSERT … ON CONFLICT DO NOTHING``) inside a transaction that stays open until Kafka
has acknowledged every copy, and commits only then. A failed delivery rolls the claims
back (run again to retry); a concurrent redrive waits on the claimed rows and skips
them. A crash between the acknowledgement and the commit can send a copy twice — the
sinks skip the duplicate by ``event_id``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from psycopg import sql

from consumers.dead_letters import DLQ_SUFFIX, HEADER_PREFIX, TRUNCATED_HEADER
from consumers.ops.errors import RedriveError
from consumers.ops.positions import has_table
from consumers.ops.reader import TopicReader
from consumers.ops.timeindex import parse_time
from consumers.records import Headers, headers_of

logger = logging.getLogger(__name__)

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


def _table(schema: str) -> sql.Composed:
    return sql.SQL("{}.dlq_redrives").format(sql.Identifier(schema))


def redriven_positions(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str
) -> dict[tuple[int, int], int]:
    """Positions of ``dlq_topic`` already redriven → the record timestamp recorded."""
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_partition, dlq_offset, dlq_timestamp_ms FROM {} WHERE dlq_topic = %s"
        ).format(_table(schema)),
        (dlq_topic,),
    ).fetchall()
    return {(p, o): stamp for p, o, stamp in rows}


@dataclass(slots=True)
class _Redriven:
    """What ``dlq_redrives`` says about one dead-letter topic."""

    positions: dict[tuple[int, int], int]  # (partition, offset) → dlq record timestamp
    sources: set[_Source]


def _load_redriven(conn: psycopg.Connection[Any], schema: str, dlq_topic: str) -> _Redriven:
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_partition, dlq_offset, dlq_timestamp_ms, source_topic,"
            " source_partition, source_offset, value_digest FROM {} WHERE dlq_topic = %s"
        ).format(_table(schema)),
        (dlq_topic,),
    ).fetchall()
    positions = {(p, o): stamp for p, o, stamp, *_rest in rows}
    sources = {
        (topic, partition, offset, bytes(digest))
        for *_dlq, topic, partition, offset, digest in rows
        if partition is not None and offset is not None
    }
    return _Redriven(positions, sources)


@dataclass(slots=True)
class ErrorClassSummary:
    """The dead letters of one error class."""

    error_class: str
    count: int = 0
    redriven: int = 0  # already sent back (by an earlier redrive)
    at_cap: int = 0  # not redriven yet, but at the redrive cap
    first_at: datetime | None = None
    last_at: datetime | None = None
    samples: list[DeadLetter] = field(default_factory=list)
    source_topics: Counter[str] = field(default_factory=Counter)


def summarize(
    letters: Iterable[DeadLetter],
    *,
    redriven: dict[tuple[int, int], int] | None = None,
    max_redrives: int = 3,
    samples: int = 3,
) -> list[ErrorClassSummary]:
    """Dead letters grouped by error class, the largest group first; memory is bounded
    by the number of classes (``samples`` letters kept per class)."""
    done = redriven or {}
    classes: dict[str, ErrorClassSummary] = {}
    # Times are compared as milliseconds and made datetimes once per class at the end:
    # a summary may run over hundreds of thousands of letters.
    span: dict[str, tuple[int, int]] = {}
    for letter in letters:
        name = letter.error_class
        entry = classes.get(name)
        if entry is None:
            entry = classes[name] = ErrorClassSummary(name)
        entry.count += 1
        entry.source_topics[letter.source_topic] += 1
        if done.get((letter.partition, letter.offset)) == letter.timestamp_ms:
            entry.redriven += 1
        elif letter.redrive_count >= max_redrives:
            entry.at_cap += 1
        at = letter.dead_lettered_at_ms
        first, last = span.get(name, (at, at))
        span[name] = (min(first, at), max(last, at))
        if len(entry.samples) < samples:
            entry.samples.append(letter)
    for name, (first, last) in span.items():
        classes[name].first_at = datetime.fromtimestamp(first / 1000, UTC)
        classes[name].last_at = datetime.fromtimestamp(last / 1000, UTC)
    return sorted(classes.values(), key=lambda e: (-e.count, e.error_class))


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """What a redrive did (or, dry, would do)."""

    redriven: tuple[DeadLetter, ...]
    already_redriven: tuple[DeadLetter, ...]
    at_cap: tuple[DeadLetter, ...]
    repeats: tuple[DeadLetter, ...]  # same source record as one redriven (or being) already
    dry_run: bool
    truncated: tuple[DeadLetter, ...] = ()  # references to records too large: not redriven


@dataclass(slots=True)
class _Delivery:
    letter: DeadLetter
    partition: int | None = None
    offset: int | None = None
    error: str | None = None


class Redriver:
    """Sends dead letters back to their source topics, each at most once.

    Args:
        producer: an idempotent producer (the caller flushes and closes it).
        conn: Postgres, with the ``dlq_redrives`` table in ``schema``.
        max_redrives: records that already carry this many redrives are skipped.
        chunk_size: records per claim-and-deliver transaction.
        delivery_timeout_s: how long one chunk may take to be acknowledged.
        operator: recorded in ``redriven_by``.
    """

    def __init__(
        self,
        *,
        producer: Producer,
        conn: psycopg.Connection[Any],
        schema: str,
        max_redrives: int = 3,
        chunk_size: int = 500,
        delivery_timeout_s: float = 30.0,
        operator: str = "sidestream-dlq",
    ) -> None:
        if max_redrives < 0:
            raise ValueError(f"max_redrives must be >= 0, got {max_redrives}")
        self._producer = producer
        self._conn = conn
        self._schema = schema
        self._max_redrives = max_redrives
        self._chunk_size = chunk_size
        self._delivery_timeout_s = delivery_timeout_s
        self._operator = operator
        self._redriven: dict[str, _Redriven] = {}

    def redrive(self, letters: Iterable[DeadLetter], *, dry_run: bool = False) -> RedriveReport:
        """Redrive ``letters``, skipping those redriven before, repeats and those at the cap.

        Raises:
            RedriveError: a chunk's copies were not all acknowledged; that chunk is not
                recorded (earlier chunks are), so running again retries it.
        """
        redriven: list[DeadLetter] = []
        already: list[DeadLetter] = []
        capped: list[DeadLetter] = []
        repeats: list[DeadLetter] = []
        truncated: list[DeadLetter] = []
        chunk: list[DeadLetter] = []
        picked: set[_Source] = set()  # sources chosen by this call (dry runs included)
        for letter in letters:
            state = self._state(letter.dlq_topic)
            source = letter.source
            if letter.truncated:
                truncated.append(letter)
                logger.warning(
                    "not redriving %s (%s): a truncated reference, the record was too large "
                    "for the dead-letter topic; replay it from %s[%s]@%s",
                    letter.where,
                    letter.error_class,
                    letter.source_topic,
                    letter.source_partition,
                    letter.source_offset,
                )
            elif state.positions.get(letter.position) == letter.timestamp_ms:
                already.append(letter)
            elif source is not None and (source in state.sources or source in picked):
                repeats.append(letter)
            elif letter.redrive_count >= self._max_redrives:
                capped.append(letter)
                logger.warning(
                    "not redriving %s (%s): redriven %d times already",
                    letter.where,
                    letter.error_class,
                    letter.redrive_count,
                )
            else:
                chunk.append(letter)
                if source is not None:
                    picked.add(source)
            if len(chunk) >= self._chunk_size:
                self._send(chunk, dry_run, redriven, already)
                chunk = []
        if chunk:
            self._send(chunk, dry_run, redriven, already)
        return RedriveReport(
            tuple(redriven),
            tuple(already),
            tuple(capped),
            tuple(repeats),
            dry_run,
            tuple(truncated),
        )

    def _state(self, dlq_topic: str) -> _Redriven:
        state = self._redriven.get(dlq_topic)
        if state is None:
            state = self._redriven[dlq_topic] = _load_redriven(self._conn, self._schema, dlq_topic)
        return state

    def _send(
        self,
        chunk: list[DeadLetter],
        dry_run: bool,
        redriven: list[DeadLetter],
        already: list[DeadLetter],
    ) -> None:
        if dry_run:
            redriven.extend(chunk)
            return
        with self._conn.transaction():
            claimed = self._claim(chunk)
            already.extend(letter for letter in chunk if letter.identity not in claimed)
            deliveries = [self._produce(letter) for letter in chunk if letter.identity in claimed]
            self._producer.flush(self._delivery_timeout_s)
            failed = [d for d in deliveries if d.error is not None or d.offset is None]
            if failed:
                raise RedriveError(
                    chunk[0].dlq_topic,
                    len(failed),
                    [d.error or "not acknowledged in time" for d in failed],
                )
            self._record_targets(deliveries)
        for delivery in deliveries:
            letter = delivery.letter
            state = self._state(letter.dlq_topic)
            state.positions[letter.position] = letter.timestamp_ms
            if letter.source is not None:
                state.sources.add(letter.source)
            redriven.append(letter)
            logger.info(
                "redrove %s (%s) to %s[%s]@%s",
                letter.where,
                letter.error_class,
                letter.source_topic,
                delivery.partition,
                delivery.offset,
            )

    def _claim(self, chunk: list[DeadLetter]) -> set[tuple[str, int, int]]:
        # A row with another timestamp belongs to an earlier incarnation of the topic.
        rows = self._conn.execute(
            sql.SQL(
                """
                INSERT INTO {table} AS r (dlq_topic, dlq_partition, dlq_offset,
                    dlq_timestamp_ms, source_topic, source_partition, source_offset,
                    value_digest, error_class, redrive_count, redriven_by)
                SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[],
                    %s::text[], %s::int[], %s::bigint[], %s::bytea[], %s::text[], %s::int[],
                    %s::text[])
                ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE
                   SET dlq_timestamp_ms = EXCLUDED.dlq_timestamp_ms,
                       source_topic = EXCLUDED.source_topic,
                       source_partition = EXCLUDED.source_partition,
                       source_offset = EXCLUDED.source_offset,
                       value_digest = EXCLUDED.value_digest,
                       error_class = EXCLUDED.error_class,
                       redrive_count = EXCLUDED.redrive_count,
                       redriven_by = EXCLUDED.redriven_by,
                       target_partition = NULL, target_offset = NULL, redriven_at = now()
                 WHERE r.dlq_timestamp_ms <> EXCLUDED.dlq_timestamp_ms
                RETURNING dlq_topic, dlq_partition, dlq_offset
                """
            ).format(table=_table(self._schema)),
            (
                [x.dlq_topic for x in chunk],
                [x.partition for x in chunk],
                [x.offset for x in chunk],
                [x.timestamp_ms for x in chunk],
                [x.source_topic for x in chunk],
                [x.source_partition for x in chunk],
                [x.source_offset for x in chunk],
                [x.digest for x in chunk],
                [x.error_class for x in chunk],
                [x.redrive_count + 1 for x in chunk],
                [self._operator] * len(chunk),
            ),
        ).fetchall()
        return {(t, p, o) for t, p, o in rows}

    def _produce(self, letter: DeadLetter) -> _Delivery:
        delivery = _Delivery(letter)

        def on_delivery(err: KafkaError | None, message: Message) -> None:
            if err is not None:
                delivery.error = str(err)
            else:
                delivery.partition, delivery.offset = message.partition(), message.offset()

        headers = [
            *letter.headers,
            (REDRIVE_COUNT_HEADER, str(letter.redrive_count + 1).encode()),
            (
                REDRIVE_FROM_HEADER,
                f"{letter.dlq_topic}:{letter.partition}:{letter.offset}".encode(),
            ),
        ]
        # Back to the partition it came from, so it keeps its place among its key's
        # records (client partitioners differ; the original partition is certain).
        placement: dict[str, Any] = {}
        if letter.source_partition is not None:
            placement["partition"] = letter.source_partition
        self._producer.produce(
            letter.source_topic,
            value=letter.value,
            key=letter.key,
            headers=headers,
            on_delivery=on_delivery,
            **placement,
        )
        return delivery

    def _record_targets(self, deliveries: list[_Delivery]) -> None:
        if not deliveries:
            return
        self._conn.execute(
            sql.SQL(
                """
                UPDATE {table} AS r SET target_partition = v.tp, target_offset = v.toff
                  FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::int[], %s::bigint[])
                       AS v(t, p, o, tp, toff)
                 WHERE r.dlq_topic = v.t AND r.dlq_partition = v.p AND r.dlq_offset = v.o
                """
            ).format(table=_table(self._schema)),
            (
                [d.letter.dlq_topic for d in deliveries],
                [d.letter.partition for d in deliveries],
                [d.letter.offset for d in deliveries],
                [d.partition for d in deliveries],
                [d.offset for d in deliveries],
            ),
        )


# --- what the CLI and the console both do -----------------------------------------------
def dead_letter_summary(
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    schema: str,
    dlq_topic: str,
    letter_filter: LetterFilter | None = None,
    max_redrives: int = 3,
    samples: int = 3,
    letters: Iterable[DeadLetter] | None = None,
) -> list[ErrorClassSummary]:
    """``dlq_topic`` grouped by error class, counting what the ledger says was redriven
    (no ledger table yet: nothing was). ``letters`` (already read, e.g. kept by a
    long-running process) replaces reading the topic; the filter applies to them too."""
    done = (
        redriven_positions(conn, schema, dlq_topic)
        if has_table(conn, schema, "dlq_redrives")
        else {}
    )
    if letters is None:
        letters = read_dead_letters(reader, dlq_topic, letter_filter)
    elif letter_filter is not None and letter_filter != LetterFilter():
        letters = (x for x in letters if letter_filter.matches(x))
    return summarize(
        letters,
        redriven=done,
        max_redrives=max_redrives,
        samples=samples,
    )


def redrive_dead_letters(
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    producer: Producer,
    schema: str,
    dlq_topic: str,
    letter_filter: LetterFilter | None = None,
    max_redrives: int = 3,
    dry_run: bool = False,
    operator: str = "sidestream-dlq",
) -> RedriveReport:
    """Redrive the dead letters of ``dlq_topic`` that ``letter_filter`` selects (see
    :class:`Redriver`); ``dry_run`` reports what would be sent and sends nothing.

    Raises:
        ValueError: no ``dlq_redrives`` table in ``schema`` (run the migrations).
        RedriveError: a chunk was not acknowledged (see :meth:`Redriver.redrive`).
    """
    if not has_table(conn, schema, "dlq_redrives"):
        raise ValueError(f"no dlq_redrives table in schema {schema}: run `sidestream db migrate`")
    redriver = Redriver(
        producer=producer, conn=conn, schema=schema, max_redrives=max_redrives, operator=operator
    )
    return redriver.redrive(read_dead_letters(reader, dlq_topic, letter_filter), dry_run=dry_run)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One row of ``dlq_redrives``: a dead letter sent back, where, when and by whom."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    error_class: str
    redrive_count: int
    target_partition: int | None
    target_offset: int | None
    redriven_by: str
    redriven_at: datetime


def ledger_version(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str
) -> tuple[int, datetime | None]:
    """How many redrives of ``dlq_topic`` the ledger holds and the latest one's time: it
    changes whenever a redrive is recorded (a cache of a summary keys on it)."""
    if not has_table(conn, schema, "dlq_redrives"):
        return (0, None)
    row = conn.execute(
        sql.SQL("SELECT count(*), max(redriven_at) FROM {} WHERE dlq_topic = %s").format(
            _table(schema)
        ),
        (dlq_topic,),
    ).fetchone()
    return (0, None) if row is None else (int(row[0]), row[1])


def redrive_ledger(
    conn: psycopg.Connection[Any], schema: str, dlq_topic: str, *, limit: int = 50
) -> list[LedgerEntry]:
    """The latest redrives of ``dlq_topic``, newest first (empty without the table)."""
    if not has_table(conn, schema, "dlq_redrives"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT dlq_topic, dlq_partition, dlq_offset, source_topic, source_partition,"
            " source_offset, error_class, redrive_count, target_partition, target_offset,"
            " redriven_by, redriven_at FROM {} WHERE dlq_topic = %s"
            " ORDER BY redriven_at DESC, dlq_partition, dlq_offset LIMIT %s"
        ).format(_table(schema)),
        (dlq_topic, limit),
    ).fetchall()
    return [LedgerEntry(*row) for row in rows]
