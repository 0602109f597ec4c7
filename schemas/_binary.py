"""Avro binary at the byte level, for the compiled (generated) encoders and decoders.

What generated code runs on: the epoch constants, zig-zag varints and their lookup tables, the
string-map writer of the encoders, the readers the decoders' lines call (`decoder_runtime` names
them), the two signals a fast path raises (`_FastPathError`: take the careful path;
`MalformedRecordError`: the bytes are not valid Avro, final), and `compile_function`, which turns
generated source into a function. The kinds that emit the lines are in `schemas._kinds`, the
codec that assembles them in `schemas._codec`.
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.errors import SidestreamError

__all__ = ["MalformedRecordError", "compile_function", "decoder_runtime"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
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
# kinds emit (schemas/_kinds.py): `d` is the message value (bytes), `p` the position of the next
# byte. Reading past the end raises IndexError, a bad string UnicodeDecodeError, a short double
# struct.error: the careful path then decides, and names the problem, as it always did.


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
