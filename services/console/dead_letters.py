"""Dead letters as the console shows them: which ``.dlq`` topics exist, one letter read
back by its position, and its value decoded (Avro → JSON) when it still decodes."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from consumers import dead_letter_topic
from consumers.ops import DeadLetter, TopicReader
from consumers.ops.redrive import REDRIVE_COUNT_HEADER
from schemas import EventDeserializer, SchemaError
from services.console.pipelines import Pipeline

__all__ = [
    "DeadLetterIndex",
    "DecodedValue",
    "decode_value",
    "dlq_topics",
    "header_rows",
    "letter_at",
]


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
class _Indexed:
    next_offsets: dict[int, int]  # partition → the next offset to read
    letters: list[DeadLetter]


class DeadLetterIndex:
    """The dead letters of each ``.dlq`` topic, kept in memory and topped up with only
    the records written since the last look, so a page over 100k dead letters does not
    re-read the topic on every view.

    Letters are kept slim (no key, value or original headers; the message cut to
    ``message_chars``): enough for :func:`consumers.ops.summarize` and the samples; a
    letter's page reads the full record. A topic whose log no longer matches (deleted and
    recreated, or trimmed below what was read) is read again from its start.

    Not thread-safe: call it under the resources' reader lock.
    """

    def __init__(self, *, message_chars: int = 240) -> None:
        self._message_chars = message_chars
        self._topics: dict[str, _Indexed] = {}

    def letters(self, reader: TopicReader, dlq_topic: str) -> list[DeadLetter]:
        """Every dead letter of ``dlq_topic`` up to its current end."""
        keys = [(dlq_topic, p) for p in reader.partitions(dlq_topic)]
        ends = reader.ends(keys)
        index = self._topics.get(dlq_topic)
        if index is None or any(
            index.next_offsets.get(p, e.low) > e.end or index.next_offsets.get(p, e.low) < e.low
            for (_t, p), e in ends.items()
        ):
            index = self._topics[dlq_topic] = _Indexed({}, [])
        ranges = {key: (index.next_offsets.get(key[1], e.low), e.end) for key, e in ends.items()}
        for message in reader.scan(ranges):
            index.letters.append(self._slim(DeadLetter.from_message(message)))
        index.next_offsets = {key[1]: end for key, (_start, end) in ranges.items()}
        return index.letters

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
