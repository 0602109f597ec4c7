"""What the batch runtime hands to a sink: decoded events with their Kafka coordinates.

Two kinds of records: a `Record` holds the decoded event (the careful path, and every record
of a sink without a row decoder); a `RowRecord` holds the row that a sink's compiled row
decoder (`consumers.rows`) read straight from the message value, plus the few `facts` the sink
and the runtime need (``occurred_at`` first). Both carry the `RawRecord` they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import Message

from schemas import Event

E = TypeVar("E", bound=Event)

Headers = list[tuple[str, str | bytes | None]]


def headers_of(message: Message) -> Headers:
    """A message's headers as a list of pairs, whatever form the client returned."""
    headers = message.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


class RawRecord:
    """A message as it came off Kafka (kept for the dead-letter topic).

    Built from a message with `from_message`, its key, headers and timestamp are read from
    the message only when asked for (dead letters, tracing): most records never need them.
    """

    __slots__ = (
        "_headers",
        "_key",
        "_message",
        "_timestamp_ms",
        "offset",
        "partition",
        "topic",
        "value",
    )
    _headers: Headers
    _key: bytes | None
    _message: Message
    _timestamp_ms: int

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp_ms: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._key = key
        self.value = value
        self._headers = headers
        self._timestamp_ms = timestamp_ms

    @classmethod
    def from_message(
        cls, message: Message, topic: str, partition: int, offset: int, value: bytes | None
    ) -> RawRecord:
        """The record of `message` (whose coordinates and value the caller already read)."""
        raw = cls.__new__(cls)
        raw.topic = topic
        raw.partition = partition
        raw.offset = offset
        raw.value = value
        raw._message = message  # the other slots stay unset until first read
        return raw

    @property
    def key(self) -> bytes | None:
        try:
            return self._key
        except AttributeError:
            self._key = self._message.key()
            return self._key

    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            self._headers = headers_of(self._message)
            return self._headers

    @property
    def timestamp_ms(self) -> int:
        try:
            return self._timestamp_ms
        except AttributeError:
            self._timestamp_ms = int(self._message.timestamp()[1])
            return self._timestamp_ms

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.topic,
            self.partition,
            self.offset,
            self.key,
            self.value,
            self.headers,
            self.timestamp_ms,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RawRecord):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable headers cache: not hashable

    def __repr__(self) -> str:
        return (
            f"RawRecord(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
            f"key={self.key!r}, value={self.value!r}, headers={self.headers!r}, "
            f"timestamp_ms={self.timestamp_ms})"
        )


@dataclass(frozen=True, slots=True)
class Record(Generic[E]):
    """A decoded event and the message it came from."""

    raw: RawRecord
    event: E


@dataclass(frozen=True, slots=True)
class RowRecord(Record[Any]):
    """A record decoded straight into its sink's row (binary COPY form), without an event.

    `event` holds the sink's facts tuple (``occurred_at`` first, then what the sink's layout
    asks for, by name), so code that reads ``record.event.occurred_at`` works on both kinds.
    """

    row: bytes
