"""What the batch runtime hands to a sink: decoded events with their Kafka coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from confluent_kafka import Message

from schemas import Event

E = TypeVar("E", bound=Event)

Headers = list[tuple[str, str | bytes | None]]


def headers_of(message: Message) -> Headers:
    """A message's headers as a list of pairs, whatever form the client returned."""
    headers = message.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A message as it came off Kafka (kept for the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp_ms: int

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Record(Generic[E]):
    """A decoded event and the message it came from."""

    raw: RawRecord
    event: E
