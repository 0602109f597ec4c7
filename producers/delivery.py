"""What a delivery report says about one message, and the event id inside a message value.

librdkafka reports each message once, from ``poll()``: delivered (with partition and offset)
or failed (with an error). :class:`DeliveryReport` is that report in Sidestream's terms.

Reports carry the event id without a per-message callback (which costs ~2 µs per
``produce()``): every event schema starts with ``event_id`` (the shared envelope, checked
by the codecs), so :func:`event_id_of` reads it from the value right after the framing.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from schemas.wire import parse_framing

__all__ = ["DeliveryReport", "event_id_of"]

_UUID_LENGTH = 36


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """The outcome of one published message."""

    topic: str
    partition: int | None
    offset: int | None
    """Offset in the partition; None when the message failed."""
    key: bytes | None
    event_id: str | None
    """The event's id, read from the value; None if the value is not an encoded event."""
    error: KafkaError | None
    """None when delivered."""
    latency_s: float | None
    """Time from ``produce()`` to the report, as measured by librdkafka."""

    @property
    def delivered(self) -> bool:
        return self.error is None

    @classmethod
    def from_message(cls, error: KafkaError | None, message: Message) -> DeliveryReport:
        value = message.value()
        key = message.key()
        return cls(
            topic=message.topic() or "",
            partition=message.partition(),
            offset=message.offset() if error is None else None,
            key=key if isinstance(key, bytes) else None,
            event_id=event_id_of(value) if isinstance(value, bytes) else None,
            error=error,
            latency_s=message.latency(),
        )


def event_id_of(value: bytes) -> str | None:
    """The ``event_id`` of an encoded event (either framing), or None if `value` is not one.

    Reads only the framing and the first field: an Avro string (zig-zag varint length, then
    UTF-8). A UUID string is 36 bytes, so its length is the single byte 72.
    """
    try:
        offset = parse_framing(value).body_offset
    except Exception:
        return None
    if len(value) < offset + 1 + _UUID_LENGTH or value[offset] != _UUID_LENGTH << 1:
        return None
    try:
        return value[offset + 1 : offset + 1 + _UUID_LENGTH].decode("ascii")
    except UnicodeDecodeError:
        return None
