"""Per-event-class codecs compiled from the Avro schemas: validate, encode, decode.

Encoding is on the hot path of every publish, so each event class gets a *compiled* encoder: a
straight-line Python function generated from the current schema, which reads the dataclass slots,
checks each value's type with one cheap test and joins the Avro binary pieces in one go. It
replaces `fastavro.validation.validate` + `fastavro.schemaless_writer`, which both walk the schema
on every call: about 4 us for an AuditEvent against 8 us for the writer alone
(``devtools/bench/serde.py``, ``sidestream bench --section serde``).

The generated function only handles the common case. Anything unusual (a wrong type, a string of
4 KiB or more, a timestamp outside 1978..3111, a dict subclass) makes it raise, and the event then
takes the careful path: `validate` names the offending field in a `ValidationError`, and a valid
event is encoded by fastavro, the reference implementation. Tests check that both paths produce
the same bytes.

Decoding is compiled too, per writer schema (`schemas._decode` generates the function from the
lines each kind of `schemas._kinds` emits; `schemas._binary` holds the helpers those lines call,
and the encoders' varint tables). The careful path
for decoding is `EventCodec.decode`: fastavro's schema resolution (writer schema -> current reader
schema), then Avro values turned into the dataclass's types (enums, aware datetimes).
"""

from __future__ import annotations

import io
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from typing import Any

import fastavro

from schemas._binary import (
    _EPOCH,
    _MICROSECOND,
    _SMALL_VARINTS,
    _encode_string_map,
    _FastPathError,
    _zigzag_varint,
)
from schemas._kinds import _UUID_BYTES, _Kind, _kind_for, _Nullable
from schemas.catalog import SchemaCatalog, SchemaVersion
from schemas.errors import SchemaError, ValidationError
from schemas.events import Event

__all__ = [
    "Decoder",
    "EventCodec",
    "build_codec",
    "strip_logical_types",
]


_NESTED_SCHEMA_KEYS = ("type", "items", "values")


def strip_logical_types(schema: Any) -> Any:
    """A copy of `schema` without logical types: the binary encoding is the same, and values
    come back raw (micros, strings) so the codec converts them once, to the dataclass's types."""
    if isinstance(schema, list):
        return [strip_logical_types(branch) for branch in schema]
    if not isinstance(schema, Mapping):
        return schema
    stripped = {key: value for key, value in schema.items() if key != "logicalType"}
    for key in _NESTED_SCHEMA_KEYS:
        if key in stripped:
            stripped[key] = strip_logical_types(stripped[key])
    if "fields" in stripped:
        stripped["fields"] = [strip_logical_types(f) for f in stripped["fields"]]
    if "logicalType" in schema and set(stripped) == {"type"}:
        return stripped["type"]
    return stripped


# --- the codec ---------------------------------------------------------------------------------

Encoder = Callable[[Event, bytes], bytes]
"""``encode(event, header) -> header + Avro binary body``; raises `ValidationError`."""

Decoder = Callable[[bytes], Event]
"""``decode(value) -> event``, compiled by `schemas._decode` for one writer schema and framing."""


class EventCodec:
    """Validation, encoding and decoding of one event class, against the current schema."""

    def __init__(self, event_cls: type[Event], current: SchemaVersion) -> None:
        if current.version != event_cls.SCHEMA_VERSION:
            raise SchemaError(
                f"{event_cls.__name__}.SCHEMA_VERSION is {event_cls.SCHEMA_VERSION} but the "
                f"current schema of {current.subject} is v{current.version} ({current.path})"
            )
        self.event_cls = event_cls
        self.subject = current.subject
        self.current = current
        self.parsed_schema = fastavro.parse_schema(strip_logical_types(current.schema))
        self.fields = self._fields(event_cls, current)
        self.encode: Encoder = self._compile_encoder()
        self._readers: dict[bytes, tuple[Any, Any]] = {}
        self.fast_decoders: dict[tuple[bytes, int], Decoder | None] = {}
        """Compiled decoders by (writer fingerprint, body offset): see `schemas._decode`."""
        # Only fields whose Avro value is not already the Python value need converting; None
        # (a null branch) never does.
        self._converters = [
            (name, kind.value_kind.from_avro)
            for name, kind in self.fields
            if type(kind.value_kind).from_avro is not _Kind.from_avro
        ]

    @staticmethod
    def _fields(event_cls: type[Event], current: SchemaVersion) -> tuple[tuple[str, _Kind], ...]:
        hints = typing.get_type_hints(event_cls)
        class_fields = [f.name for f in dataclass_fields(event_cls)]
        schema_fields = [f["name"] for f in current.schema["fields"]]
        if class_fields != schema_fields:
            raise SchemaError(
                f"{event_cls.__name__} fields {class_fields} do not match {current.path} "
                f"fields {schema_fields} (same names, same order)"
            )
        kinds = []
        for avro_field in current.schema["fields"]:
            name = avro_field["name"]
            where = f"{current.path} field {name!r}"
            kind = _kind_for(avro_field["type"], hints[name], where)
            if kind.annotation != hints[name]:
                raise SchemaError(
                    f"{where}: {event_cls.__name__}.{name} is annotated {hints[name]!r}, "
                    f"the schema needs {kind.annotation!r}"
                )
            kinds.append((name, kind))
        return tuple(kinds)

    # -- validation (careful path) --

    def validate(self, event: Event) -> None:
        """Raise `ValidationError` naming the first invalid field of `event`."""
        if type(event) is not self.event_cls:
            raise ValidationError(
                f"expected a {self.event_cls.__name__}, got {type(event).__name__}",
                field=None,
                event_type=self.subject,
            )
        for name, kind in self.fields:
            value = getattr(event, name)
            if value is None and not isinstance(kind, _Nullable):
                problem: str | None = "missing: the field is required, got None"
            else:
                problem = kind.check(value)
            if problem is not None:
                raise ValidationError(
                    f"{self.subject}.{name}: {problem}", field=name, event_type=self.subject
                )
        if event.event_type != self.subject:
            raise ValidationError(
                f"{self.subject}.event_type: unknown event type {event.event_type!r} for "
                f"{self.event_cls.__name__}, expected {self.subject!r}",
                field="event_type",
                event_type=self.subject,
            )

    def to_avro(self, event: Event) -> dict[str, Any]:
        """The record as fastavro writes it (raw values, schema_version stamped)."""
        record = {name: kind.to_avro(getattr(event, name)) for name, kind in self.fields}
        record["schema_version"] = self.current.version
        return record

    def encode_carefully(self, event: Event, header: bytes) -> bytes:
        """Validate, then encode with fastavro: slower, but handles every valid value."""
        self.validate(event)
        buffer = io.BytesIO()
        buffer.write(header)
        try:
            fastavro.schemaless_writer(buffer, self.parsed_schema, self.to_avro(event))
        except (ValueError, TypeError, OverflowError) as exc:
            # validate() accepted the event, so this is a gap in validate(): still name the field
            # fastavro complains about when it says which one.
            field = next((n for n, _ in self.fields if n in str(exc)), None)
            raise ValidationError(
                f"{self.subject}: cannot encode: {exc}", field=field, event_type=self.subject
            ) from exc
        return buffer.getvalue()

    # -- the compiled encoder (fast path) --

    def _compile_encoder(self) -> Encoder:
        env: dict[str, Any] = {
            "S": _SMALL_VARINTS,
            "UUID": _UUID_BYTES.fullmatch,
            "EPOCH": _EPOCH,
            "MICROSECOND": _MICROSECOND,
            "Miss": _FastPathError,
            "zigzag": _zigzag_varint,
            "string_map": _encode_string_map,
            "careful": self.encode_carefully,
            "event_cls": self.event_cls,
            "subject": self.subject,
        }
        body = [
            "if type(e) is not event_cls or e.event_type != subject: raise Miss",
        ]
        parts = ["header"]
        for index, (name, kind) in enumerate(self.fields):
            if name == "schema_version":
                # Stamped: the record says which version it was written with, whatever the event
                # carried (a decoded older event is re-encoded with the current schema).
                body.append("if type(e.schema_version) is not int: raise Miss")
                parts.append(repr(_zigzag_varint(self.current.version)))
                continue
            lines, pieces = kind.emit(f"e.{name}", f"f{index}", env)
            body += lines
            parts += pieces
        source = "\n".join(
            [
                "def encode(e, header):",
                "    try:",
                *(f"        {line}" for line in body),
                f"        return b''.join(({', '.join(parts)}))",
                "    except Exception:",
                "        # Whatever the fast path could not take: validate (raises",
                "        # ValidationError naming the field) and encode with fastavro.",
                "        return careful(e, header)",
            ]
        )
        code = compile(source, f"<compiled encoder of {self.current.path}>", "exec")
        # The source is generated above from the schema only, never from input data.
        exec(code, env)  # noqa: S102
        encoder: Encoder = env["encode"]
        encoder.__doc__ = f"Encode a {self.event_cls.__name__}.\n\n{source}"
        return encoder

    # -- decoding --

    def decode(
        self, stream: io.BytesIO, writer_fingerprint: bytes, writer_schema: Mapping[str, Any]
    ) -> Event:
        """Read one record written with `writer_schema` from `stream` into the current class.

        Raises whatever fastavro raises on bad bytes; the deserializer maps it to `DecodeError`.
        """
        reader = self._readers.get(writer_fingerprint)
        if reader is None:
            # Same canonical form: no resolution needed (faster); else resolve into current.
            parsed = fastavro.parse_schema(strip_logical_types(writer_schema))
            same = writer_fingerprint == self.current.fingerprint
            reader = (parsed, None if same else self.parsed_schema)
            self._readers[writer_fingerprint] = reader
        record = fastavro.schemaless_reader(stream, reader[0], reader[1])
        if not isinstance(record, dict):
            raise TypeError(f"expected a record, read {type(record).__name__}")
        for name, convert in self._converters:
            value = record[name]
            if value is not None:
                record[name] = convert(value)
        return self.event_cls(**record)


def build_codec(event_cls: type[Event], catalog: SchemaCatalog) -> EventCodec:
    """Compile the codec of `event_cls` against the current version of its subject."""
    return EventCodec(event_cls, catalog.current(event_cls.SUBJECT))
