"""Dead letters as the console shows them: which ``.dlq`` topics exist, one letter read
back by its position, and its value decoded (Avro → JSON) when it still decodes."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import threading
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from consumers import dead_letter_topic
from consumers.ops import DeadLetter, ErrorClassSummary, OpsError, TopicReader
from consumers.ops.redrive import REDRIVE_COUNT_HEADER
from schemas import EventDeserializer, SchemaError
from services.console.foreground import Foreground
from services.console.pipelines import Pipeline

__all__ = [
    "DeadLetterIndex",
    "DeadLetterTally",
    "DecodedValue",
    "IndexView",
    "decode_value",
    "dlq_topics",
    "header_rows",
    "letter_at",
]

logger = logging.getLogger(__name__)

_MAX_BACKOFF_S = 30.0  # between retries of a failing topic when no page asks


def dlq_topics(pipelines: Iterable[Pipeline]) -> list[tuple[str, str]]:
    """``(pipeline name, dead-letter topic)`` of every source topic of every sink."""
    return [(p.name, dead_letter_topic(topic)) for p in pipelines if p.sink for topic in p.topics]


def letter_at(reader: TopicReader, dlq_topic: str, partition: int, offset: int) -> DeadLetter:
    """The dead letter at ``partition``/``offset`` of ``dlq_topic``.

    Raises:
        ValueError: nothing is stored there (beyond the end, or trimmed).
    """
    key = (dlq_topic, partition)
    ends = reader.ends([key])[key]
    if not ends.low <= offset < ends.end:
        raise ValueError(
            f"{dlq_topic}[{partition}] holds offsets {ends.low}..{ends.end - 1}, not {offset}"
        )
    for message in reader.scan({key: (offset, offset + 1)}):
        if message.offset() == offset:
            return DeadLetter.from_message(message)
    raise ValueError(f"{dlq_topic}[{partition}]@{offset} could not be read (compacted away?)")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclass(frozen=True, slots=True)
class DecodedValue:
    """A record value as text: JSON of the decoded event, or why it did not decode."""

    json: str | None
    error: str | None
    preview: str  # the first bytes, printable

    @property
    def ok(self) -> bool:
        return self.json is not None


def decode_value(deserializer: EventDeserializer, value: bytes | None, topic: str) -> DecodedValue:
    """Decode like the sink would (writer schema by fingerprint → current reader)."""
    raw = value or b""
    preview = raw[:120].decode("utf-8", "replace").encode("unicode_escape").decode()
    if value is None:
        return DecodedValue(None, "no value (a tombstone)", "")
    try:
        event = deserializer.deserialize(value, topic)
    except SchemaError as exc:
        return DecodedValue(None, f"{type(exc).__name__}: {exc}", preview)
    body = {"event_class": type(event).__name__, **dataclasses.asdict(event)}
    return DecodedValue(json.dumps(body, indent=2, default=_plain, sort_keys=False), None, preview)


def header_rows(letter: DeadLetter) -> list[tuple[str, str]]:
    """The letter's original headers as text, plus the redrive count it carries."""
    rows = [(name, "" if value is None else _text(value)) for name, value in letter.headers]
    rows.append((REDRIVE_COUNT_HEADER, str(letter.redrive_count)))
    return rows


def _text(value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    return value.decode("utf-8", "replace")


@dataclass(slots=True)
class _ClassTally:
    count: int = 0
    capped: int = 0  # letters carrying the redrive cap (some may be redriven too)
    first_ms: int = 0
    last_ms: int = 0
    samples: list[DeadLetter] = field(default_factory=list)
    source_topics: Counter[str] = field(default_factory=Counter)


class _Partition:
    """A partition's letters as columns (offset ascending): what a ledger row is matched
    on, a few bytes a letter and no object per letter for the garbage collector to walk."""

    __slots__ = ("capped", "classes", "offsets", "stamps")

    def __init__(self) -> None:
        self.offsets = array("q")
        self.stamps = array("q")  # record timestamps (the ledger records them)
        self.classes = array("I")  # error class ids
        self.capped = array("b")  # 1: carries the redrive cap


class DeadLetterTally:
    """Dead letters as they are read, tallied by error class, so that a summary costs the
    number of classes plus the ledger's size, not a pass over every letter.

    Memory: per letter only its offset, record timestamp, class and whether it is at the
    redrive cap (in arrays, about 21 bytes); per class its counts and the first
    ``max_samples`` letters, slim (no key, value or original headers; the message cut to
    ``message_chars``). :meth:`summary` equals :func:`consumers.ops.summarize` over the
    letters added, in the order they were added (a partition's in offset order).
    """

    def __init__(
        self, *, max_redrives: int = 3, max_samples: int = 5, message_chars: int = 240
    ) -> None:
        self._max_redrives = max_redrives
        self._max_samples = max_samples
        self._message_chars = message_chars
        self._classes: dict[str, _ClassTally] = {}
        self._class_ids: dict[str, int] = {}
        self._class_names: list[str] = []
        self._partitions: dict[int, _Partition] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, letter: DeadLetter) -> None:
        """Tally ``letter``; letters of a partition must come in offset order.

        Raises:
            ValueError: ``letter`` is not after the last one added of its partition.
        """
        part = self._partitions.get(letter.partition)
        if part is None:
            part = self._partitions[letter.partition] = _Partition()
        if part.offsets and letter.offset <= part.offsets[-1]:
            raise ValueError(
                f"{letter.dlq_topic}[{letter.partition}]@{letter.offset} added after "
                f"offset {part.offsets[-1]}: letters of a partition come in offset order"
            )
        name = letter.error_class
        class_id = self._class_ids.get(name)
        at = letter.dead_lettered_at_ms
        if class_id is None:
            class_id = self._class_ids[name] = len(self._class_names)
            self._class_names.append(name)
            self._classes[name] = _ClassTally(first_ms=at, last_ms=at)
        capped = letter.redrive_count >= self._max_redrives
        part.offsets.append(letter.offset)
        part.stamps.append(letter.timestamp_ms)
        part.classes.append(class_id)
        part.capped.append(capped)
        self._count += 1
        tally = self._classes[name]
        tally.count += 1
        tally.source_topics[letter.source_topic] += 1
        tally.capped += capped
        tally.first_ms = min(tally.first_ms, at)
        tally.last_ms = max(tally.last_ms, at)
        if len(tally.samples) < self._max_samples:
            tally.samples.append(self._slim(letter))

    def summary(
        self, *, redriven: Mapping[tuple[int, int], int] | None = None, samples: int = 3
    ) -> list[ErrorClassSummary]:
        """By error class, the largest first; ``redriven``: the ledger's positions →
        recorded record timestamp (a letter counts as redriven when both match).

        Raises:
            ValueError: more ``samples`` than the tally keeps.
        """
        if samples > self._max_samples:
            raise ValueError(f"samples must be at most {self._max_samples}, not {samples}")
        classes = {
            name: ErrorClassSummary(
                name,
                count=t.count,
                at_cap=t.capped,
                first_at=datetime.fromtimestamp(t.first_ms / 1000, UTC),
                last_at=datetime.fromtimestamp(t.last_ms / 1000, UTC),
                samples=t.samples[:samples],
                source_topics=Counter(t.source_topics),
            )
            for name, t in self._classes.items()
        }
        for (partition, offset), stamp in (redriven or {}).items():
            part = self._partitions.get(partition)
            if part is None:
                continue
            i = bisect_left(part.offsets, offset)
            if i == len(part.offsets) or part.offsets[i] != offset or part.stamps[i] != stamp:
                continue  # not indexed (yet), or another record than the one redriven
            entry = classes[self._class_names[part.classes[i]]]
            entry.redriven += 1
            if part.capped[i]:
                entry.at_cap -= 1  # redriven is counted first, as summarize does
        return sorted(classes.values(), key=lambda e: (-e.count, e.error_class))

    def _slim(self, letter: DeadLetter) -> DeadLetter:
        return dataclasses.replace(
            letter,
            key=None,
            value=None,
            headers=[],
            error_class=sys.intern(letter.error_class),
            source_topic=sys.intern(letter.source_topic),
            error_message=letter.error_message[: self._message_chars],
        )


@dataclass(frozen=True, slots=True)
class IndexView:
    """What the index holds of one ``.dlq`` topic when a page asks.

    ``complete``: every letter up to the topic's end, as last checked (``checked_at``),
    is counted in ``summary``; otherwise it counts the first ``indexed`` of about
    ``expected`` (offsets still to read count as letters: transaction markers and
    compacted gaps make it an estimate) and every figure in it is partial.
    """

    dlq_topic: str
    summary: list[ErrorClassSummary]
    indexed: int
    expected: int
    complete: bool
    epoch: int  # bumped when the topic is read again from its start
    checked_at: float | None  # epoch seconds of the last check that found it caught up
    error: str | None  # the last check's failure (it is retried), None when it worked

    @property
    def percent(self) -> float:
        """Share indexed, 0..100 (100 only when complete)."""
        if self.complete:
            return 100.0
        return min(99.9, 100.0 * self.indexed / self.expected) if self.expected else 0.0


class _TopicIndexer:
    """One ``.dlq`` topic read by one thread with its own reader (a consumer is not
    thread-safe, and the pages' shared reader must stay free for them)."""

    def __init__(
        self,
        dlq_topic: str,
        *,
        open_reader: Callable[[], TopicReader],
        new_tally: Callable[[], DeadLetterTally],
        wait_idle: Callable[[], object],
        poll_interval_s: float,
        batch: int,
    ) -> None:
        self.dlq_topic = dlq_topic
        self._open_reader = open_reader
        self._new_tally = new_tally
        self._wait_idle = wait_idle
        self._poll_interval_s = poll_interval_s
        self._batch = batch
        # Everything below is guarded by _state (and waited on by views).
        self._state = threading.Condition()
        self._tally = new_tally()
        self._next: dict[int, int] = {}  # partition → next offset to read
        self._ends: dict[int, int] = {}  # partition → end of the current pass
        self._epoch = 0
        self._caught_up = False
        self._scanning = False
        self._checked_at: float | None = None
        self._error: str | None = None
        self._asked = 0  # views that asked for a fresh check…
        self._served = 0  # …and the last of them a finished check covers
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"dlq-index:{dlq_topic}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def view(
        self, wait_s: float, redriven: Mapping[tuple[int, int], int] | None, samples: int
    ) -> IndexView:
        with self._state:
            self._asked += 1
            ask = self._asked
            deadline = time.monotonic() + wait_s
        self._wake.set()
        with self._state:
            # Waiting helps only when the check will finish soon: not during a long read,
            # where the page renders the partial index and refreshes itself instead.
            while self._served < ask and not self._long_read():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state.wait(remaining)
            return IndexView(
                dlq_topic=self.dlq_topic,
                summary=self._tally.summary(redriven=redriven, samples=samples),
                indexed=len(self._tally),
                expected=len(self._tally) + self._remaining(),
                complete=self._caught_up,
                epoch=self._epoch,
                checked_at=self._checked_at,
                error=self._error,
            )

    def _long_read(self) -> bool:
        return self._scanning and self._remaining() > self._batch

    def _remaining(self) -> int:
        return sum(max(0, end - self._next.get(p, end)) for p, end in self._ends.items())

    def _run(self) -> None:
        reader: TopicReader | None = None
        failures = 0
        try:
            while not self._stop.is_set():
                with self._state:
                    ask = self._asked
                error = None
                try:
                    if reader is None:
                        reader = self._open_reader()
                    self._catch_up(reader)
                    if failures:
                        logger.info("dlq index %s: reading again", self.dlq_topic)
                    failures = 0
                except Exception as exc:  # any failure: shown on the page, retried below
                    failures += 1
                    error = f"{type(exc).__name__}: {exc}"
                    # Once a failure, not every retry (a missing topic would log each second).
                    log = logger.warning if error != self._error else logger.debug
                    log("dlq index %s: %s (retrying)", self.dlq_topic, error)
                    if not isinstance(exc, OpsError) and reader is not None:
                        reader.close()  # a reader in an unknown state is built again
                        reader = None
                with self._state:
                    self._error = error
                    self._scanning = False
                    self._served = max(self._served, ask)
                    self._state.notify_all()
                # Idle until a page asks or the poll interval passes; after a failure,
                # back off: 0.5 s doubling up to _MAX_BACKOFF_S (a page's view retries now).
                delay = self._poll_interval_s
                if failures:
                    delay = min(_MAX_BACKOFF_S, 0.5 * 2 ** min(failures, 10))
                self._wake.wait(delay)
                self._wake.clear()
        finally:
            if reader is not None:
                reader.close()

    def _catch_up(self, reader: TopicReader) -> None:
        """Read what was written since the last pass; start again from the topic's start
        when its log no longer matches (deleted and recreated, or trimmed below what
        was read)."""
        topic = self.dlq_topic
        ends = reader.ends([(topic, p) for p in reader.partitions(topic)])
        with self._state:
            if any(not e.low <= self._next.get(p, e.low) <= e.end for (_t, p), e in ends.items()):
                logger.info("dlq index %s: log changed, reading it again", topic)
                self._tally = self._new_tally()
                self._next = {}
                self._epoch += 1
            self._next = {p: self._next.get(p, e.low) for (_t, p), e in ends.items()}
            self._ends = {p: e.end for (_t, p), e in ends.items()}
            ranges = {(topic, p): (self._next[p], end) for p, end in self._ends.items()}
            self._caught_up = not self._remaining()
            self._scanning = not self._caught_up
            if self._caught_up:
                self._checked_at = time.time()
                return
            self._state.notify_all()  # a waiting view learns whether this read is long
        pending: list[DeadLetter] = []
        for message in reader.scan(ranges):
            pending.append(DeadLetter.from_message(message))
            if len(pending) >= self._batch:
                self._add(pending)
                pending = []
                if self._stop.is_set():
                    return
                # Pages first (see DeadLetterIndex); the short sleep hands the GIL to any
                # thread waiting for it now instead of after a switch interval (5 ms).
                self._wait_idle()
                time.sleep(0.001)
        self._add(pending)
        with self._state:
            # Offsets without a letter (transaction markers) are passed too.
            self._next = dict(self._ends)
            self._caught_up = True
            self._scanning = False
            self._checked_at = time.time()

    def _add(self, letters: list[DeadLetter]) -> None:
        with self._state:
            for letter in letters:
                self._tally.add(letter)
                self._next[letter.partition] = letter.offset + 1
            self._state.notify_all()


class DeadLetterIndex:
    """The dead letters of each ``.dlq`` topic, tallied in memory and indexed in the
    background, so no page reads a topic: a page over 100k dead letters renders what is
    indexed so far (:class:`IndexView`: complete, or partial with its progress).

    One thread per topic, each with its own reader from ``open_reader``, reads the topic
    from :meth:`start` on, then checks its end every ``poll_interval_s`` and as soon as
    a page asks (:meth:`view`), and reads only what was written since, into a
    :class:`DeadLetterTally` (about 21 bytes a letter, plus a few slim samples per
    class; a letter's page reads the full record). A failed check (topic missing,
    broker down) is logged, shown by :meth:`view` and retried.

    Pages first: between batches of ``batch`` letters a read waits while ``foreground``
    has a request in flight (up to ``yield_s``), as decoding letters holds the GIL
    against the page's thread.

    Actions that need the whole topic (a redrive's preview and run) do not use the index:
    they read the topic whole, as ``sidestream dlq redrive`` does.
    """

    def __init__(
        self,
        dlq_topics: Iterable[str],
        *,
        open_reader: Callable[[], TopicReader],
        max_redrives: int = 3,
        message_chars: int = 240,
        poll_interval_s: float = 1.0,
        fresh_wait_s: float = 0.0,
        batch: int = 100,
        foreground: Foreground | None = None,
        yield_s: float = 0.5,
    ) -> None:
        if poll_interval_s <= 0 or fresh_wait_s < 0 or batch < 1:
            raise ValueError(
                "poll_interval_s must be > 0, fresh_wait_s >= 0 and batch >= 1, not "
                f"{poll_interval_s}, {fresh_wait_s}, {batch}"
            )
        self._fresh_wait_s = fresh_wait_s
        pages = foreground or Foreground()
        self._topics = {
            topic: _TopicIndexer(
                topic,
                open_reader=open_reader,
                new_tally=lambda: DeadLetterTally(
                    max_redrives=max_redrives, message_chars=message_chars
                ),
                wait_idle=lambda: pages.wait_idle(yield_s),
                poll_interval_s=poll_interval_s,
                batch=batch,
            )
            for topic in dict.fromkeys(dlq_topics)
        }
        self._started = False

    def start(self) -> None:
        """Start indexing every topic (once)."""
        if not self._started:
            self._started = True
            for indexer in self._topics.values():
                indexer.start()

    def view(
        self,
        dlq_topic: str,
        *,
        redriven: Mapping[tuple[int, int], int] | None = None,
        samples: int = 0,
        wait_s: float | None = None,
    ) -> IndexView:
        """What is indexed of ``dlq_topic`` now, summarized by error class (``redriven``:
        the redrive ledger's positions → record timestamps; ``samples`` per class, at
        most 5). Asks its thread to check the topic's end at once and waits up to
        ``wait_s`` (default ``fresh_wait_s``) for that check, never for a long read.

        Raises:
            KeyError: not a topic of this index.
        """
        indexer = self._topics[dlq_topic]
        return indexer.view(self._fresh_wait_s if wait_s is None else wait_s, redriven, samples)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every thread (a read in progress stops at its next batch) and wait up to
        ``timeout_s`` for them to close their readers."""
        for indexer in self._topics.values():
            indexer.stop()
        deadline = time.monotonic() + timeout_s
        for indexer in self._topics.values():
            indexer.join(max(0.0, deadline - time.monotonic()))
