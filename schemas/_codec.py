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
lines each kind emits here, and this module holds the helpers those lines call). The careful path
for decoding is `EventCodec.decode`: fastavro's schema resolution (writer schema -> current reader
schema), then Avro values turned into the dataclass's types (enums, aware datetimes).
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import fastavro

from runtime.errors import SidestreamError
from schemas.catalog import SchemaCatalog, SchemaVersion
from schemas.errors import SchemaError, ValidationError
from schemas.events import Event

__all__ = [
    "Decoder",
    "EventCodec",
    "MalformedRecordError",
    "build_codec",
    "compile_function",
    "decoder_runtime",
    "strip_logical_types",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_BYTES = re.compile(_UUID.pattern.encode())
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
_WORDS = struct.Struct("<4H")


def _zigzag_varint(n: int) -> bytes:
    """Avro's encoding of an int or long: zig-zag, then base-128 varint, low bits first."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Encoded lengths (and small longs) up to this size come from a table instead of `_zigzag_varint`.
_SMALL = 4096
_SMALL_VARINTS = tuple(_zigzag_varint(n) for n in range(_SMALL))


def _encode_string_map(mapping: dict[str, str]) -> bytes:
    """A non-empty map<string> as one block of entries followed by the end-of-map zero.

    Keys and values longer than the varint table raise IndexError: the careful path takes them.
    """
    small = _SMALL_VARINTS
    parts = [small[len(mapping)]]
    for key, value in mapping.items():
        k = key.encode()
        v = value.encode()
        parts += (small[len(k)], k, small[len(v)], v)
    parts.append(b"\x00")
    return b"".join(parts)


class _FastPathError(Exception):
    """Raised inside a compiled encoder or decoder: this value needs the careful path."""


# --- the compiled decoders' runtime ----------------------------------------------------------
# Generated decoders (schemas/_decode.py) read the Avro body with these helpers and the lines the
# kinds emit below: `d` is the message value (bytes), `p` the position of the next byte. Reading
# past the end raises IndexError, a bad string UnicodeDecodeError, a short double struct.error:
# the careful path then decides, and names the problem, as it always did.


class MalformedRecordError(SidestreamError):
    """Raised inside a compiled decoder for bytes that are not valid Avro, where fastavro would
    still return something (a negative enum index wraps around, a boolean byte of 2 reads as True,
    an int beyond 32 bits or a varint beyond 64 bits is accepted): that verdict is final.

    `reason` says what is wrong (with the field, when known); the decoder adds the `subject`.
    """

    def __init__(self, reason: str, subject: str | None = None) -> None:
        super().__init__(reason if subject is None else f"{subject} record: {reason}")
        self.reason = reason
        self.subject = subject


def _read_long(d: bytes, p: int) -> tuple[int, int]:
    """The zig-zag varint at `p` and the position after it; at most 10 bytes, 64 bits."""
    b = d[p]
    n = b & 0x7F
    shift = 7
    p += 1
    while b & 0x80:
        if shift > 63:
            raise MalformedRecordError("a varint longer than 10 bytes")
        b = d[p]
        p += 1
        n |= (b & 0x7F) << shift
        shift += 7
    if n >> 64:
        raise MalformedRecordError("a varint beyond 64 bits")
    return (n >> 1) ^ -(n & 1), p


# By the length byte of a string up to 63 bytes, the size of the string with that byte; None
# for a longer varint or a negative length: the addition raises TypeError, the general reader
# takes over.
_SHORT_STRING_SIZES = tuple(None if b & 0x81 else 1 + (b >> 1) for b in range(256))
# One-byte ints and longs (-64..63); a byte with the top bit set is not a key.
_SMALL_INTS = {b: (b >> 1) ^ -(b & 1) for b in range(128)}


def _string_bounds(d: bytes, p: int) -> tuple[int, int]:
    """End and start of the string whose length (any varint form) is at `p`."""
    n, start = _read_long(d, p)
    if n < 0:
        raise MalformedRecordError(f"negative length {n}")
    return start + n, start


def _block_count(d: bytes, p: int) -> tuple[int, int]:
    """The entry count of a map block at `p` in any varint form, and the position of its first
    entry: a negative count is followed by the block's size in bytes, not needed here."""
    count, p = _read_long(d, p)
    if count < 0:
        count = -count
        _, p = _read_long(d, p)
    return count, p


@functools.cache
def _timestamp_tables() -> tuple[tuple[int | None, ...], ...]:
    """Tables that read the usual 8-byte varint of a timestamp as four little-endian 16-bit
    words: each gives its word's share of the value, already shifted and zig-zag decoded (for
    times after 1978); None where the word's continuation bits are wrong for that place (or the
    time is negative), which makes the `|` raise TypeError and the general reader take over.
    4 lookups instead of ~30 operations per timestamp; about 4 MB, built on first use (~20 ms)."""
    first: list[int | None] = [None] * 65536
    second, third, last = first.copy(), first.copy(), first.copy()
    for a in range(128, 256):
        for b in range(128, 256):
            word, group = a | b << 8, (a & 127) | (b & 127) << 7
            if not a & 1:  # zig-zag: an even value is a positive time
                first[word] = group >> 1
            second[word] = group << 13
            third[word] = group << 27
        for b in range(128):
            last[a | b << 8] = ((a & 127) | b << 7) << 41
    return tuple(first), tuple(second), tuple(third), tuple(last)


def _read_symbol(d: bytes, p: int, symbols: tuple[Any, ...], where: str) -> tuple[Any, int]:
    """An enum symbol whose index did not fit the one-byte table (or is out of range)."""
    index, p = _read_long(d, p)
    if not 0 <= index < len(symbols):
        raise MalformedRecordError(f"{where}: enum index {index} out of range")
    return symbols[index], p


def _bad_branch(d: bytes, p: int, where: str) -> Exception:
    """What to raise for a union branch byte that is neither of the two expected ones."""
    index, _ = _read_long(d, p)
    if index in (0, 1):  # a valid branch in a needlessly long varint: let fastavro read it
        return _FastPathError(where)
    return MalformedRecordError(f"{where}: union branch {index} out of range")


def compile_function(source: str, where: str, env: dict[str, Any], doc: str) -> Any:
    """The function defined by generated `source` (named after its ``def``), compiled with
    `where` as its file name, its globals in `env`, and `doc` + the source as its docstring.

    The source is generated from schemas (and layouts) only, never from input data.
    """
    exec(compile(source, where, "exec"), env)  # noqa: S102
    function = env[source.split("(", 1)[0].removeprefix("def ")]
    function.__doc__ = f"{doc}\n\n{source}"
    return function


def decoder_runtime() -> dict[str, Any]:
    """The names that the lines emitted by `_Kind.emit_decode` use."""
    return {
        "read_long": _read_long,
        "string_bounds": _string_bounds,
        "block_count": _block_count,
        "SHORT": _SHORT_STRING_SIZES,
        "SMALL": _SMALL_INTS,
        "read_symbol": _read_symbol,
        "bad_branch": _bad_branch,
        "Malformed": MalformedRecordError,
        "Miss": _FastPathError,
        "EPOCH": _EPOCH,
        "MICROSECOND": _MICROSECOND,
    }


# --- field kinds -------------------------------------------------------------------------------
# One class per Avro field type the events use. Each knows how to check a Python value (careful
# path), convert it to and from what fastavro reads and writes, and emit the lines of the compiled
# encoder and decoder. Adding a type to a schema that no kind covers fails when the codec is built.


class _Kind:
    annotation: Any
    """The Python type a dataclass field of this kind must be annotated with."""

    def check(self, value: Any) -> str | None:
        """Why `value` is invalid, or None when it is valid."""
        raise NotImplementedError

    @property
    def value_kind(self) -> _Kind:
        """The kind of the non-null values (itself, except for a nullable)."""
        return self

    def to_avro(self, value: Any) -> Any:
        return value

    def from_avro(self, value: Any) -> Any:
        return value

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        """Statements that read `src` into `var` and reject what the fast path cannot encode,
        and the expressions of the encoded pieces, in order. Constants go into `env`."""
        raise NotImplementedError

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        """Statements that read one value at position `p` of `d` into `var` (the dataclass's
        type, as `from_avro` gives it) and move `p` past it. Temporaries start with `var`;
        `where` (the field's name) goes into error messages; constants go into `env`."""
        raise NotImplementedError


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


class _String(_Kind):
    annotation = str

    def __init__(self, *, uuid: bool) -> None:
        self.uuid = uuid

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return f"expected a string, got {_describe(value)}"
        try:
            value.encode()
        except UnicodeEncodeError:
            return "string is not valid UTF-8 (lone surrogate?)"
        if self.uuid and _UUID.fullmatch(value) is None:
            return f"expected a UUID string, got {value[:40]!r}"
        return None

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        lines = [f"{var} = {src}.encode()"]
        if self.uuid:
            lines.append(f"if UUID({var}) is None: raise Miss")
        return lines, [f"S[len({var})]", var]

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        # One length byte for up to 63 bytes, from a table; a longer varint or a negative length
        # takes the general reader. Slicing past the end is caught by the final check of the
        # position; a logical uuid is decoded as the plain string it is on the wire.
        return [
            "try:",
            f"    {var} = d[p + 1:(p := p + SHORT[d[p]])].decode()",
            "except TypeError:  # 64 bytes or more (or a negative length)",
            f"    p, {var} = string_bounds(d, p)",
            f"    {var} = d[{var}:p].decode()",
        ]


class _Integer(_Kind):
    annotation = int

    def __init__(self, avro_type: str) -> None:
        self.avro_type = avro_type
        self.low, self.high = _INT_RANGE[avro_type]

    def check(self, value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected an integer ({self.avro_type}), got {_describe(value)}"
        if not self.low <= value <= self.high:
            return f"{value} is out of range for an Avro {self.avro_type}"
        return None

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        return (
            [
                f"{var} = {src}",
                f"if type({var}) is not int or not {self.low} <= {var} <= {self.high}: raise Miss",
            ],
            [f"(S[{var}] if 0 <= {var} < {_SMALL} else zigzag({var}))"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        # One byte (-64..63) from a table, two bytes (-8192..8191) inline, the rest through the
        # general reader, which also checks that an int fits in 32 bits.
        lines = [
            "try:",
            f"    {var} = SMALL[d[p]]",
            "    p += 1",
            "except KeyError:",
            f"    {var} = d[p + 1]",
            f"    if {var} < 128:",
            f"        {var} = d[p] & 127 | {var} << 7",
            f"        {var} = ({var} >> 1) ^ -({var} & 1)",
            "        p += 2",
            "    else:",
            f"        {var}, p = read_long(d, p)",
        ]
        if self.avro_type == "int":
            lines += [
                f"        if not {self.low} <= {var} <= {self.high}:",
                f"            raise Malformed(f'{where}: {{{var}}} is out of range for an int')",
            ]
        return lines


class _TimestampMicros(_Kind):
    annotation = datetime
    # Zig-zag values in [2**49, 2**56) are exactly 8 varint bytes: timestamps from 1978 to 3111.
    _LOW, _HIGH = 2**49, 2**56

    def check(self, value: Any) -> str | None:
        if not isinstance(value, datetime):
            return f"expected a datetime, got {_describe(value)}"
        if value.utcoffset() is None:
            return "expected a timezone-aware datetime (UTC), got a naive one"
        return None

    def to_avro(self, value: datetime) -> int:
        return (value - _EPOCH) // _MICROSECOND

    def from_avro(self, value: int) -> datetime:
        return _EPOCH + timedelta(microseconds=value)

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        # A naive datetime or a non-datetime makes the subtraction raise TypeError: careful path.
        seven_bit_groups = ", ".join(
            [f"{var} & 127 | 128"] + [f"{var} >> {7 * i} & 127 | 128" for i in range(1, 7)]
        )
        return (
            [
                f"{var} = (({src} - EPOCH) // MICROSECOND) << 1",
                f"if not {self._LOW} <= {var} < {self._HIGH}: raise Miss",
            ],
            [f"bytes(({seven_bit_groups}, {var} >> 49))"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        # A value beyond datetime's range raises OverflowError: the careful path then fails too.
        return [*self.emit_decode_micros(var, env), f"{var} = EPOCH + MICROSECOND * {var}"]

    def emit_decode_micros(self, var: str, env: dict[str, Any]) -> list[str]:
        """Statements that read the raw microseconds since the epoch into `var` (an int)."""
        # The usual 8-byte varint (1978..3111) through tables; anything else (fewer than 8
        # bytes left, another length, a time before 1970) takes the general reader.
        env.update(zip(("TS0", "TS1", "TS2", "TS3"), _timestamp_tables(), strict=True))
        env.update(WORDS=_WORDS.unpack_from, StructError=struct.error)
        w = [f"{var}_{i}" for i in range(4)]
        return [
            "try:",
            f"    {', '.join(w)} = WORDS(d, p)",
            f"    {var} = TS0[{w[0]}] | TS1[{w[1]}] | TS2[{w[2]}] | TS3[{w[3]}]",
            "    p += 8",
            "except (TypeError, StructError):",
            f"    {var}, p = read_long(d, p)",
        ]


class _Floating(_Kind):
    annotation = float

    def __init__(self, avro_type: str) -> None:
        self.avro_type = avro_type
        self.pack = struct.Struct("<d" if avro_type == "double" else "<f").pack

    def check(self, value: Any) -> str | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"expected a number ({self.avro_type}), got {_describe(value)}"
        try:
            number = float(value)
        except OverflowError:
            return f"{value} is out of range for an Avro {self.avro_type}"
        if self.avro_type == "float" and math.isfinite(number) and abs(number) > _FLOAT_MAX:
            return f"{value} is out of range for an Avro float"
        return None

    def to_avro(self, value: float) -> float:
        return float(value)

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        env[f"{var}_pack"] = self.pack
        return (
            [
                f"{var} = {src}",
                f"if type({var}) is not float and type({var}) is not int: raise Miss",
            ],
            [f"{var}_pack({var})"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        unpack = struct.Struct("<d" if self.avro_type == "double" else "<f")
        env[f"{var}_unpack"] = unpack.unpack_from
        return [f"{var} = {var}_unpack(d, p)[0]", f"p += {unpack.size}"]


class _Boolean(_Kind):
    annotation = bool

    def check(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"expected a bool, got {_describe(value)}"

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        return (
            [f"{var} = {src}", f"if {var} is not True and {var} is not False: raise Miss"],
            [f"(b'\\x01' if {var} else b'\\x00')"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        return [
            f"{var} = d[p]",
            f"if {var} > 1:",
            f"    raise Malformed(f'{where}: boolean byte {{{var}}} is neither 0 nor 1')",
            f"{var} = {var} == 1",
            "p += 1",
        ]


class _Enum(_Kind):
    def __init__(self, enum_cls: type[Enum], symbols: list[str]) -> None:
        self.annotation = enum_cls
        self.enum_cls = enum_cls
        self.encoded = {enum_cls[symbol]: _zigzag_varint(i) for i, symbol in enumerate(symbols)}
        self.members = tuple(enum_cls[symbol] for symbol in symbols)

    def check(self, value: Any) -> str | None:
        if not isinstance(value, self.enum_cls):
            return f"expected a {self.enum_cls.__name__}, got {_describe(value)}"
        return None

    def to_avro(self, value: Enum) -> str:
        return value.name

    def from_avro(self, value: str) -> Enum:
        return self.enum_cls[value]

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        env[f"{var}_enum"] = self.enum_cls
        env[f"{var}_encoded"] = self.encoded
        return (
            [f"{var} = {src}", f"if type({var}) is not {var}_enum: raise Miss"],
            [f"{var}_encoded[{var}]"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        # Indexes that fit one varint byte come from a table; a byte not in it (out of range,
        # negative, or a longer varint) takes the general reader, which checks the range.
        env[f"{var}_by_byte"] = {2 * i: m for i, m in enumerate(self.members) if 2 * i < 128}
        env[f"{var}_members"] = self.members
        return [
            "try:",
            f"    {var} = {var}_by_byte[d[p]]",
            "    p += 1",
            "except KeyError:",
            f"    {var}, p = read_symbol(d, p, {var}_members, {where!r})",
        ]


class _StringMap(_Kind):
    annotation = dict[str, str]

    def check(self, value: Any) -> str | None:
        if not isinstance(value, Mapping):
            return f"expected a dict[str, str], got {_describe(value)}"
        for key, item in value.items():
            if not isinstance(key, str):
                return f"keys must be strings, got {_describe(key)}"
            if not isinstance(item, str):
                return f"value of {key!r} must be a string, got {_describe(item)}"
            try:
                key.encode()
                item.encode()
            except UnicodeEncodeError:
                return f"entry {key!r} is not valid UTF-8 (lone surrogate?)"
        return None

    def to_avro(self, value: Mapping[str, str]) -> dict[str, str]:
        return dict(value)

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        return (
            [f"{var} = {src}", f"if type({var}) is not dict: raise Miss"],
            [f"(string_map({var}) if {var} else b'\\x00')"],
        )

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        # Blocks of entries up to a zero count. Every pass moves `p` forward, so a corrupt count
        # runs off the end of the value (IndexError) instead of looping for long.
        key = _String(uuid=False).emit_decode(f"{var}_k", where, env)
        value = _String(uuid=False).emit_decode(f"{var}_v", where, env)
        return [
            f"{var} = {{}}",
            "while True:",
            f"    {var}_n = d[p]",
            f"    if {var}_n & 129:",
            f"        {var}_n, p = block_count(d, p)",
            "    else:",
            f"        {var}_n >>= 1",
            "        p += 1",
            f"    if not {var}_n:",
            "        break",
            f"    for _ in range({var}_n):",
            *(f"        {line}" for line in key),
            *(f"        {line}" for line in value),
            f"        {var}[{var}_k] = {var}_v",
        ]


class _Nullable(_Kind):
    def __init__(self, inner: _Kind, null_index: int) -> None:
        self.inner = inner
        self.annotation = inner.annotation | None
        self.null_branch = _zigzag_varint(null_index)
        self.value_branch = _zigzag_varint(1 - null_index)

    @property
    def value_kind(self) -> _Kind:
        return self.inner

    def check(self, value: Any) -> str | None:
        return None if value is None else self.inner.check(value)

    def to_avro(self, value: Any) -> Any:
        return None if value is None else self.inner.to_avro(value)

    def from_avro(self, value: Any) -> Any:
        return None if value is None else self.inner.from_avro(value)

    def emit(self, src: str, var: str, env: dict[str, Any]) -> tuple[list[str], list[str]]:
        inner_lines, inner_parts = self.inner.emit(var, f"{var}_v", env)
        lines = [
            f"{var} = {src}",
            f"if {var} is None:",
            f"    {var}_b = {self.null_branch!r}",
            "else:",
            *(f"    {line}" for line in inner_lines),
            f"    {var}_b = b''.join(({self.value_branch!r}, {', '.join(inner_parts)}))",
        ]
        return lines, [f"{var}_b"]

    def emit_decode(self, var: str, where: str, env: dict[str, Any]) -> list[str]:
        return [
            f"{var} = d[p]",
            "p += 1",
            f"if {var} == {self.value_branch[0]}:",
            *(f"    {line}" for line in self.inner.emit_decode(var, where, env)),
            f"elif {var} == {self.null_branch[0]}:",
            f"    {var} = None",
            "else:",
            f"    raise bad_branch(d, p - 1, {where!r})",
        ]


def _kind_for(avro_type: Any, annotation: Any, where: str) -> _Kind:
    """The kind of one field, from its Avro type and the dataclass annotation (for enums)."""
    if isinstance(avro_type, list):
        if len(avro_type) == 2 and "null" in avro_type:
            null_index = avro_type.index("null")
            inner_annotation = next(
                (a for a in typing.get_args(annotation) if a is not type(None)), None
            )
            inner = _kind_for(avro_type[1 - null_index], inner_annotation, where)
            return _Nullable(inner, null_index)
    elif isinstance(avro_type, str):
        if avro_type == "string":
            return _String(uuid=False)
        if avro_type in _INT_RANGE:
            return _Integer(avro_type)
        if avro_type in ("double", "float"):
            return _Floating(avro_type)
        if avro_type == "boolean":
            return _Boolean()
    elif isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        base = avro_type.get("type")
        if logical is None and base in ("string", "int", "long", "double", "float", "boolean"):
            return _kind_for(base, annotation, where)
        if (base, logical) == ("string", "uuid"):
            return _String(uuid=True)
        if (base, logical) == ("long", "timestamp-micros"):
            return _TimestampMicros()
        if base == "enum" and isinstance(annotation, type) and issubclass(annotation, Enum):
            symbols = list(avro_type["symbols"])
            if [member.name for member in annotation] != symbols:
                raise SchemaError(
                    f"{where}: {annotation.__name__} members {[m.name for m in annotation]} "
                    f"differ from the schema's symbols {symbols}"
                )
            return _Enum(annotation, symbols)
        if base == "map" and avro_type.get("values") == "string":
            return _StringMap()
    raise SchemaError(
        f"{where}: Avro type {avro_type!r} (annotated {annotation!r}) has no codec; "
        "add a kind in schemas/_codec.py"
    )


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
