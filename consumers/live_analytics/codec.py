"""The project's Avro serializers as faust codecs: no second copy of the decoding code.

`AvroEventCodec` wraps ``schemas.EventDeserializer`` (both framings, every schema version)
for the source topics and ``schemas.EventSerializer`` for the alerts topic. A record that
does not decode does not stop the stream: it comes out as an `Undecodable` marker that the
worker counts and skips (the exact sinks send such records to their dead-letter topics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.serializers.codecs import Codec

from schemas import Event, EventDeserializer, EventSerializer, SchemaError

__all__ = ["AvroEventCodec", "Undecodable"]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What a value that is not a decodable event turns into."""

    error_class: str
    message: str


class AvroEventCodec(Codec):
    """A faust value codec: bytes <-> typed `schemas.Event`.

    `topic` names the topic in error messages and, with a schema registry, the subject
    ``<topic>-value`` the serializer registers under.
    """

    def __init__(
        self,
        *,
        deserializer: EventDeserializer | None = None,
        serializer: EventSerializer | None = None,
        topic: str | None = None,
    ) -> None:
        super().__init__()
        self._deserializer = deserializer or EventDeserializer()
        self._serializer = serializer or EventSerializer()
        self._topic = topic

    def decode(self, data: object) -> Event | Undecodable:
        """The event in a record's value, or `Undecodable` (never raises).

        The live analytics agent reads its source topics' values as raw bytes and decodes
        them here, a micro-batch at a time: faust's serializer registry would cost as much
        per record again as the decoding itself.
        """
        if not isinstance(data, bytes):
            return Undecodable(
                "TypeError", f"expected the record's value as bytes, got {data!r:.80}"
            )
        try:
            return self._deserializer.deserialize(data, self._topic)
        except SchemaError as exc:
            return Undecodable(type(exc).__name__, str(exc))

    def _loads(self, s: bytes) -> Event | Undecodable:
        return self.decode(s)

    def _dumps(self, s: Any) -> bytes:
        if not isinstance(s, Event):
            raise TypeError(f"AvroEventCodec encodes schemas.Event values, got {type(s)!r}")
        return self._serializer.serialize(s, self._topic or "")
