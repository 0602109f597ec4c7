"""How encoded events are framed in a Kafka message value.

Two framings, told apart by their first byte:

- Avro single-object encoding (the default, no registry needed)::

      C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema (little-endian) | Avro binary

- Confluent wire format (with a schema registry)::

      00 | 4-byte schema id (big-endian) | Avro binary
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.errors import DecodeError

__all__ = [
    "CONFLUENT_HEADER_SIZE",
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_HEADER_SIZE",
    "SINGLE_OBJECT_MARKER",
    "Framing",
    "confluent_header",
    "parse_framing",
    "single_object_header",
]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_HEADER_SIZE = 10
"""Marker and fingerprint: the Avro body starts at this offset."""
CONFLUENT_HEADER_SIZE = 5
"""Magic byte and schema id: the Avro body starts at this offset."""


def single_object_header(fingerprint: bytes) -> bytes:
    """The 10-byte prefix of a single-object encoded record."""
    if len(fingerprint) != 8:
        raise ValueError(f"a CRC-64-AVRO fingerprint has 8 bytes, got {len(fingerprint)}")
    return SINGLE_OBJECT_MARKER + fingerprint


def confluent_header(schema_id: int) -> bytes:
    """The 5-byte prefix of a record in Confluent wire format."""
    if not 0 <= schema_id < 2**32:
        raise ValueError(f"schema id {schema_id} does not fit in 4 bytes")
    return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class Framing:
    """What the prefix of a message value says: the format, the writer schema, where the body
    starts."""

    format: Literal["single-object", "confluent"]
    fingerprint: bytes | None
    schema_id: int | None
    body_offset: int


def parse_framing(data: bytes, *, topic: str | None = None) -> Framing:
    """Read the prefix of `data`; raise `DecodeError` if it is neither framing."""
    if data[:2] == SINGLE_OBJECT_MARKER:
        if len(data) < SINGLE_OBJECT_HEADER_SIZE:
            raise DecodeError(
                f"truncated single-object header: {len(data)} bytes, need 10", topic=topic
            )
        return Framing("single-object", bytes(data[2:10]), None, SINGLE_OBJECT_HEADER_SIZE)
    if data[:1] == CONFLUENT_MAGIC:
        if len(data) < CONFLUENT_HEADER_SIZE:
            raise DecodeError(f"truncated Confluent header: {len(data)} bytes, need 5", topic=topic)
        schema_id = int.from_bytes(data[1:5], "big")
        return Framing("confluent", None, schema_id, CONFLUENT_HEADER_SIZE)
    raise DecodeError(
        f"not an encoded event: starts with {bytes(data[:2]).hex() or 'nothing'}, expected "
        "c301 (Avro single-object) or 00 (Confluent wire format)",
        topic=topic,
    )
