"""The errors of the schemas package: one small tree under `SchemaError`.

- `ValidationError`: an event does not match its schema; nothing was encoded or sent.
- `DecodeError`: bytes that cannot be decoded (unknown framing, truncated or corrupt body).
  Retrying will not help: the record is poison and belongs in a dead-letter topic.
- `UnknownSchemaError`: the framing is fine but the writer schema (fingerprint or registry id)
  is not known here, e.g. a producer already writes a version this consumer lacks.
- `RegistryError`: the schema registry is missing from the configuration, or could not answer.
  Usually transient or a deployment mistake, not a bad record.
"""

from __future__ import annotations

from runtime.errors import SidestreamError

__all__ = [
    "DecodeError",
    "RegistryError",
    "SchemaError",
    "UnknownSchemaError",
    "ValidationError",
]


class SchemaError(SidestreamError):
    """Base class of every error raised by the schemas package."""


class ValidationError(SchemaError, ValueError):
    """An event does not match its schema.

    `field` names the offending field (None when the whole object is wrong, e.g. not an event);
    `event_type` is the subject of the event class, when known.
    """

    def __init__(self, message: str, *, field: str | None, event_type: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.event_type = event_type


class DecodeError(SchemaError):
    """Bytes could not be decoded into an event. `topic` is where they came from, if known."""

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic


class UnknownSchemaError(SchemaError):
    """The writer schema of a record is not known.

    Exactly one of `fingerprint` (single-object encoding, 8 bytes CRC-64-AVRO) or `schema_id`
    (Confluent wire format) is set.
    """

    def __init__(
        self,
        message: str,
        *,
        fingerprint: bytes | None = None,
        schema_id: int | None = None,
        topic: str | None = None,
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.schema_id = schema_id
        self.topic = topic


class RegistryError(SchemaError):
    """The schema registry is not configured, or a request to it failed. `url` is its address."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url
