"""What a loader returns (:class:`Versioned`, :class:`NotFound`) and how entries are stored.

An entry is one Redis string: a fixed 22-byte big-endian header, then the payload::

    offset  size  field
    0       1     format (1)
    1       1     kind: 0 tombstone, 1 not found, 2 bytes, 3 text (UTF-8), 4 JSON
    2       8     version (unsigned)       <- read by the Lua set-if-newer scripts
    10      4     delta_ms (unsigned)      <- how long the load took, for XFetch
    14      8     expiry_ms (unix ms)      <- logical expiry, for XFetch
    22      ...   payload

A binary header keeps a small value small (no JSON envelope) and lets the Lua scripts
compare versions with ``string.byte`` alone. JSON payloads use the stdlib encoder with
compact separators (orjson/msgpack are not dependencies of this project).
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = 1
_HEADER = struct.Struct(">BBQIQ")
HEADER_SIZE = _HEADER.size  # 22; the Lua scripts hard-code it too
MAX_VERSION = 2**64 - 1
_MAX_DELTA_MS = 2**32 - 1


def check_version(version: object) -> int:
    # bool is an int subclass; True as a version is always a bug.
    if not isinstance(version, int) or isinstance(version, bool):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version must be in [0, 2**64), got {version}")
    return version


@dataclass(frozen=True, slots=True)
class Versioned:
    """A value together with the version of the entity it was read from.

    ``value`` is ``bytes``, ``str`` or anything :func:`json.dumps` accepts; it comes back
    from the cache as ``bytes``, ``str`` or the JSON-decoded object (tuples become lists).
    ``version`` must grow with every write of the entity (a row version, an event
    sequence number, ...): it is what lets the cache refuse stale fills.
    """

    value: Any
    version: int

    def __post_init__(self) -> None:
        check_version(self.version)


@dataclass(frozen=True, slots=True)
class NotFound:
    """A loader's "no such entity", cached briefly as a negative entry.

    Give the version at which the entity is known to be absent (e.g. the version of its
    deletion) when the loader knows it; ``0`` means "never existed as far as we know",
    which any invalidation outranks.
    """

    version: int = 0

    def __post_init__(self) -> None:
        check_version(self.version)


class Kind(IntEnum):
    TOMBSTONE = 0
    NOT_FOUND = 1
    BYTES = 2
    TEXT = 3
    JSON = 4


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded entry: header fields plus the still-encoded payload."""

    kind: Kind
    version: int
    delta_ms: int
    expiry_ms: int
    payload: bytes = b""

    @property
    def is_tombstone(self) -> bool:
        return self.kind is Kind.TOMBSTONE

    def encode(self) -> bytes:
        header = _HEADER.pack(
            FORMAT, self.kind, self.version, min(self.delta_ms, _MAX_DELTA_MS), self.expiry_ms
        )
        return header + self.payload

    def result(self) -> Versioned | None:
        """What ``get_or_load`` returns for this entry: a fresh object per call.

        Decoding per caller (instead of sharing one decoded object) means a caller that
        mutates a JSON dict cannot corrupt what other callers or the L1 see.
        """
        if self.kind is Kind.NOT_FOUND:
            return None
        if self.kind is Kind.BYTES:
            return Versioned(self.payload, self.version)
        if self.kind is Kind.TEXT:
            return Versioned(self.payload.decode("utf-8"), self.version)
        if self.kind is Kind.JSON:
            return Versioned(json.loads(self.payload), self.version)
        raise ValueError("a tombstone has no value")


def encode_value(value: object) -> tuple[Kind, bytes]:
    """The kind and payload of a value (``bytes`` and ``str`` stored raw, others as JSON)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return Kind.BYTES, bytes(value)
    if isinstance(value, str):
        return Kind.TEXT, value.encode("utf-8")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cache values must be bytes, str or JSON-serialisable, got {type(value).__name__}"
        ) from exc
    return Kind.JSON, text.encode("utf-8")


def decode_entry(blob: bytes | str | None) -> Entry | None:
    """Parse a stored entry; ``None`` for a missing key or a blob we cannot read.

    An unreadable blob (another format, or a foreign value under our prefix) is treated
    as a miss; the set-if-newer script treats it as absent too, so a fill repairs it.
    """
    if blob is None:
        return None
    if isinstance(blob, str):
        raise TypeError("the Redis client decodes responses; entries are binary")
    if len(blob) < HEADER_SIZE or blob[0] != FORMAT:
        logger.warning("ignoring a cache entry in an unknown format (%d bytes)", len(blob))
        return None
    _, kind, version, delta_ms, expiry_ms = _HEADER.unpack_from(blob)
    try:
        parsed_kind = Kind(kind)
    except ValueError:
        logger.warning("ignoring a cache entry of unknown kind %d", kind)
        return None
    return Entry(parsed_kind, version, delta_ms, expiry_ms, blob[HEADER_SIZE:])
