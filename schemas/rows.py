"""Compiled row decoders: a message value straight into one Postgres binary COPY row.

A sink does not need the event object, only its row. So, like the compiled decoders of
`schemas._decode`, each (writer schema, `RowLayout`) pair gets a generated straight-line function
that reads the Avro body once and writes each column in Postgres's binary COPY form as it goes:
a UUID string becomes its 16 bytes (hex, no `uuid.UUID`), a timestamp its microseconds since
2000-01-01 (no `datetime`), a string stays the UTF-8 bytes it was on the wire (checked, not
decoded), a map becomes JSONB through orjson. The function returns the row (field count,
then each field's length and bytes) and a `facts` tuple: the few values the caller needs as
Python objects (``occurred_at`` first, then the layout's `facts`).

Fast and strict: anything unusual (a string of 4 KiB or more, a UUID not in its 36-character
form, invalid UTF-8, a truncated value, trailing bytes, a value outside datetime's range,
a writer schema whose resolution needs more than field names) raises inside the function, and
the caller takes the careful path, which decodes the event and builds its row as before, so a
record never depends on this module for its verdict. Checked row for row against that path in
``tests/schemas/test_schema_rows.py`` and ``tests/consumers/test_rows.py``.

`copy_row` encodes a row of Python values (the careful path's) in the same binary form, so both
kinds of rows go into one COPY stream (`COPY_SIGNATURE` ... `COPY_TRAILER`).
"""

from __future__ import annotations

import binascii
import logging
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import orjson

from schemas._binary import compile_function, decoder_runtime
from schemas._codec import EventCodec
from schemas._decode import _plan, _UnsupportedError
from schemas._kinds import (
    _Enum,
    _Floating,
    _Integer,
    _Kind,
    _Nullable,
    _String,
    _StringMap,
    _TimestampMicros,
)
from schemas.errors import SchemaError
from schemas.events import Event
from schemas.serde import WriterSchema, _codecs

__all__ = [
    "COPY_SIGNATURE",
    "COPY_TRAILER",
    "OFFSET",
    "PARTITION",
    "RowDecoder",
    "RowLayout",
    "compile_row_decoder",
    "copy_row",
    "facts_of",
    "row_types",
]

logger = logging.getLogger(__name__)

PARTITION = "$partition"
"""A column source: the record's Kafka partition (int4)."""
OFFSET = "$offset"
"""A column source: the record's Kafka offset (int8)."""

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
"""Start of a binary COPY stream: signature, flags, header extension length."""
COPY_TRAILER = b"\xff\xff"
"""End of a binary COPY stream."""

RowDecoder = Callable[[bytes, int, int], tuple[bytes, tuple[Any, ...]]]
"""``decode(value, partition, offset) -> (binary COPY row, facts)``; raises on anything unusual."""

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_PG_EPOCH_US = (_PG_EPOCH - _EPOCH) // _MICROSECOND
# datetime's range, in microseconds since the Unix epoch: the careful path fails outside it.
_MIN_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _MICROSECOND
_MAX_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // _MICROSECOND
_NULL = b"\xff\xff\xff\xff"
_LENGTHS = tuple(n.to_bytes(4, "big") for n in range(4096))
_LEN_INT4 = struct.Struct(">ii").pack
_LEN_INT8 = struct.Struct(">iq").pack
_LEN_FLOAT8 = struct.Struct(">id").pack
_PG_TYPES = ("uuid", "timestamptz", "text", "jsonb", "int4", "int8", "float8")


@dataclass(frozen=True, slots=True)
class RowLayout:
    """Which event field (or Kafka coordinate) fills which column of a table, and which fields
    the caller also wants as Python values."""

    event_cls: type[Event]
    columns: tuple[tuple[str, str], ...]
    """``(source, pg_type)`` in column order: a field of `event_cls`, `PARTITION` or `OFFSET`;
    one of uuid, timestamptz, text, jsonb, int4, int8, float8."""
    facts: tuple[str, ...] = ()
    """Fields returned as Python values (as the event holds them) after ``occurred_at``."""
    facts_type: type[tuple[Any, ...]] = tuple
    """The tuple class of the facts, e.g. a ``NamedTuple`` with fields ``occurred_at`` and
    `facts`, so they read like the event's attributes."""

    def __post_init__(self) -> None:
        names = getattr(self.facts_type, "_fields", None)
        if names is not None and tuple(names) != ("occurred_at", *self.facts):
            raise ValueError(
                f"facts_type fields {names} must be ('occurred_at', *facts) = "
                f"{('occurred_at', *self.facts)}"
            )
        for source, pg_type in self.columns:
            if pg_type not in _PG_TYPES:
                raise ValueError(f"column from {source!r}: type {pg_type!r} not in {_PG_TYPES}")


# --- the careful path's rows --------------------------------------------------------------------


def _binary_value(pg_type: str, value: Any) -> bytes:
    if pg_type == "uuid":
        raw = value.bytes if isinstance(value, uuid.UUID) else uuid.UUID(value).bytes
    elif pg_type == "timestamptz":
        if value.utcoffset() is None:
            raise ValueError("timestamptz needs a timezone-aware datetime")
        raw = ((value - _PG_EPOCH) // _MICROSECOND).to_bytes(8, "big", signed=True)
    elif pg_type == "text":
        raw = (value.value if isinstance(value, Enum) else value).encode()
    elif pg_type == "jsonb":
        raw = b"\x01" + orjson.dumps(getattr(value, "obj", value))
    elif pg_type == "int4":
        raw = int(value).to_bytes(4, "big", signed=True)
    elif pg_type == "int8":
        raw = int(value).to_bytes(8, "big", signed=True)
    else:
        raw = struct.pack(">d", value)
    return len(raw).to_bytes(4, "big") + raw


def copy_row(types: Sequence[str], values: Sequence[Any]) -> bytes:
    """One binary COPY row of `values` (Python values as psycopg takes them: `uuid.UUID` or
    its string, aware `datetime`, `str` or a `str` enum, a JSON-able object or psycopg's
    ``Jsonb``, `int`, `float`; None is NULL) for columns of `types`."""
    parts = [len(types).to_bytes(2, "big")]
    for pg_type, value in zip(types, values, strict=True):
        parts.append(_NULL if value is None else _binary_value(pg_type, value))
    return b"".join(parts)


# --- code generation ------------------------------------------------------------------------------


def _emit_raw_string(var: str) -> list[str]:
    """Read a string's bytes (not decoded) into `var`."""
    return [
        "try:",
        f"    {var} = d[p + 1:(p := p + SHORT[d[p]])]",
        "except TypeError:  # 64 bytes or more (or a negative length)",
        f"    p, {var}_s = string_bounds(d, p)",
        f"    {var} = d[{var}_s:p]",
    ]


class _Field:
    """How one writer field is read: into `var` (Python value, when a fact needs it) and,
    when a column needs it, its binary field: the pieces of `expr` (one expression, ``var_b``,
    when `single`; a string's length and bytes stay two pieces otherwise, saving a copy)."""

    def __init__(
        self, var: str, kind: _Kind, pg_type: str | None, fact: bool, *, single: bool = False
    ) -> None:
        self.var, self.kind, self.pg_type, self.fact = var, kind, pg_type, fact
        self.single = single
        self.expr = f"{var}_b"

    def lines(self, env: dict[str, Any]) -> list[str]:
        kind = self.kind
        if isinstance(kind, _Nullable):
            field = _Field(self.var, kind.inner, self.pg_type, self.fact, single=True)
            inner = field.lines(env)
            null = [f"    {self.var} = None"] if self.fact else []
            null += [f"    {self.var}_b = NULL"] if self.pg_type else []
            return [
                f"{self.var}_u = d[p]",
                "p += 1",
                f"if {self.var}_u == {kind.value_branch[0]}:",
                *(f"    {line}" for line in inner),
                f"elif {self.var}_u == {kind.null_branch[0]}:",
                *(null or ["    pass"]),
                "else:",
                "    raise Miss",
            ]
        return self._plain(kind, env)

    def _plain(self, kind: _Kind, env: dict[str, Any]) -> list[str]:
        var, pg_type = self.var, self.pg_type
        if pg_type is None:
            if not self.fact and isinstance(kind, _String):
                # Read and dropped: checked (the careful path rejects bad UTF-8), not decoded.
                return [*_emit_raw_string(var), f"if not {var}.isascii(): {var}.decode()"]
            return kind.emit_decode(var, var, env)  # a fact only, or read and dropped
        if isinstance(kind, _String) and pg_type == "uuid":
            # The 36-character form only; uuid.UUID() takes others, the careful path decides.
            lines = [
                *_emit_raw_string(f"{var}_r"),
                f"if len({var}_r) != 36: raise Miss",
                f"{var}_b = unhexlify({var}_r.replace(b'-', b''))",
                f"if len({var}_b) != 16: raise Miss",
                *([f"{var} = {var}_r.decode()"] if self.fact else []),
            ]
            if self.single:
                return [*lines, f"{var}_b = UUID_LEN + {var}_b"]
            self.expr = f"UUID_LEN, {var}_b"
            return lines
        if isinstance(kind, _String) and pg_type == "text":
            # The decode checks the UTF-8 (a UnicodeDecodeError sends the record the careful way).
            lines = [
                *_emit_raw_string(f"{var}_r"),
                f"{var} = {var}_r.decode()"
                if self.fact
                else f"if not {var}_r.isascii(): {var}_r.decode()",
            ]
            if self.single:
                return [*lines, f"{var}_b = LENGTHS[len({var}_r)] + {var}_r"]
            self.expr = f"LENGTHS[len({var}_r)], {var}_r"
            return lines
        if isinstance(kind, _TimestampMicros) and pg_type == "timestamptz":
            lines = kind.emit_decode_micros(var, env)
            lines.append(f"if not {_MIN_US} <= {var} <= {_MAX_US}: raise Miss")
            lines.append(f"{var}_b = LEN_INT8(8, {var} - {_PG_EPOCH_US})")
            if self.fact:
                lines.append(f"{var} = EPOCH + MICROSECOND * {var}")
            return lines
        if isinstance(kind, _Enum) and pg_type == "text":
            env[f"{var}_text"] = {member: _binary_value("text", member) for member in kind.members}
            return [*kind.emit_decode(var, var, env), f"{var}_b = {var}_text[{var}]"]
        if isinstance(kind, _Integer) and pg_type in ("int4", "int8"):
            pack = "LEN_INT4(4, " if pg_type == "int4" else "LEN_INT8(8, "
            return [*kind.emit_decode(var, var, env), f"{var}_b = {pack}{var})"]
        if isinstance(kind, _Floating) and pg_type == "float8":
            return [*kind.emit_decode(var, var, env), f"{var}_b = LEN_FLOAT8(8, {var})"]
        if isinstance(kind, _StringMap) and pg_type == "jsonb":
            return [
                *kind.emit_decode(var, var, env),
                f"if {var}:",
                f"    {var}_b = b'\\x01' + dumps({var})",
                f"    {var}_b = LENGTHS[len({var}_b)] + {var}_b",
                "else:",
                f"    {var}_b = EMPTY_JSONB",
            ]
        raise _UnsupportedError(f"no row encoding of a {type(kind).__name__} as {pg_type}")


def _runtime() -> dict[str, Any]:
    env = decoder_runtime()
    env.update(
        NULL=_NULL,
        LENGTHS=_LENGTHS,
        LEN_INT4=_LEN_INT4,
        LEN_INT8=_LEN_INT8,
        LEN_FLOAT8=_LEN_FLOAT8,
        UUID_LEN=(16).to_bytes(4, "big"),
        EMPTY_JSONB=_binary_value("jsonb", {}),
        unhexlify=binascii.unhexlify,
        dumps=orjson.dumps,
    )
    return env


def _compile(layout: RowLayout, codec: EventCodec, writer: WriterSchema) -> RowDecoder:
    reads, defaults = _plan(codec, writer.fingerprint, writer.schema)
    column_types = dict(layout.columns)
    wanted_facts = {"occurred_at", *layout.facts}
    known = {name for name, _ in codec.fields}
    for source, _ in layout.columns:
        if source not in known and source not in (PARTITION, OFFSET):
            raise SchemaError(f"{layout.event_cls.__name__} has no field {source!r}")
    env = _runtime()
    body = [f"p = {writer.body_offset}"]
    column_exprs: dict[str, str] = {}
    fact_exprs: dict[str, str] = {}
    for index, (name, kind, keep) in enumerate(reads):
        var = f"f{index}"
        pg_type = column_types.get(name) if keep else None
        fact = keep and name in wanted_facts
        field = _Field(var, kind, pg_type, fact)
        body += field.lines(env)
        if pg_type is not None:
            column_exprs[name] = field.expr
        if fact:
            fact_exprs[name] = var
    # Past the end: a string ran off a truncated value; short of it: trailing bytes.
    body.append("if p != len(d): raise Miss")
    for name, _kind, value in defaults:
        if name in column_types:
            # A field the writer did not have takes the reader's default (None: NULL).
            env[f"column_{name}"] = (
                _NULL if value is None else _binary_value(column_types[name], value)
            )
            column_exprs[name] = f"column_{name}"
        env[f"fact_{name}"] = value
        fact_exprs[name] = f"fact_{name}"
    column_exprs[PARTITION] = "LEN_INT4(4, partition)"
    column_exprs[OFFSET] = "LEN_INT8(8, offset)"
    env["COLUMN_COUNT"] = len(layout.columns).to_bytes(2, "big")
    parts = ", ".join(["COLUMN_COUNT", *(column_exprs[source] for source, _ in layout.columns)])
    facts = ", ".join(fact_exprs[name] for name in ("occurred_at", *layout.facts))
    env.update(FACTS=layout.facts_type, tuple_new=tuple.__new__)
    body.append(f"return b''.join(({parts})), tuple_new(FACTS, ({facts},))")
    source = "\n".join(["def decode(d, partition, offset):", *(f"    {line}" for line in body)])
    where = f"<compiled row decoder of {codec.current.path} from {writer.fingerprint.hex()}>"
    decoder: RowDecoder = compile_function(
        source, where, env, f"Decode a {codec.event_cls.__name__} into a row."
    )
    return decoder


def compile_row_decoder(layout: RowLayout, writer: WriterSchema) -> RowDecoder | None:
    """The row decoder of values written with `writer` for `layout`, or None when there is none
    (another subject, or a resolution only fastavro does): such records take the careful path."""
    codec = _codecs()[layout.event_cls]
    if writer.subject != codec.subject:
        return None
    try:
        return _compile(layout, codec, writer)
    except _UnsupportedError as exc:
        logger.info(
            "records of %s written with schema %s take the careful path to their rows: %s",
            codec.subject,
            writer.fingerprint.hex(),
            exc,
        )
        return None


def row_types(layout: RowLayout) -> list[str]:
    """The Postgres types of `layout`'s columns, in order (for `copy_row`)."""
    return [pg_type for _, pg_type in layout.columns]


def facts_of(layout: RowLayout, event: Event) -> tuple[Any, ...]:
    """The facts tuple of a decoded `event`, as a row decoder returns it."""
    values = tuple(getattr(event, name) for name in ("occurred_at", *layout.facts))
    return tuple.__new__(layout.facts_type, values)
