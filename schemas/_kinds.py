"""The field kinds of the codecs: one class per Avro field type the events use.

Each kind checks a Python value (the careful path), converts it to and from what fastavro reads
and writes, and emits the lines of the compiled encoder and decoder (`schemas._codec`,
`schemas._decode`, `schemas.rows`). `_kind_for` picks the kind of a field from its Avro type and
its dataclass annotation; a type that no kind covers fails when the codec is built.
"""

from __future__ import annotations

import math
import re
import struct
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from schemas._binary import (
    _EPOCH,
    _MICROSECOND,
    _SMALL,
    _WORDS,
    _timestamp_tables,
    _zigzag_varint,
)
from schemas.errors import SchemaError

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_UUID_BYTES = re.compile(_UUID.pattern.encode())
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_FLOAT_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


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
        "add a kind in schemas/_kinds.py"
    )
