"""Kafka headers that travel beside an event: the W3C trace context.

Trace context is not part of the Avro record (it describes the request that caused the event,
not the fact itself); it rides in a ``traceparent`` header so tracing survives the hop through
Kafka.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["TRACEPARENT_HEADER", "trace_headers", "traceparent_from_headers"]

TRACEPARENT_HEADER = "traceparent"
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _is_valid(traceparent: str) -> bool:
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        return False
    version, trace_id, parent_id, _ = match.groups()
    return version != "ff" and trace_id != "0" * 32 and parent_id != "0" * 16


def trace_headers(traceparent: str | None) -> list[tuple[str, bytes]]:
    """Kafka headers carrying a W3C ``traceparent``; none when there is no trace.

    Raises `ValueError` for a malformed traceparent rather than propagating garbage.
    """
    if traceparent is None:
        return []
    if not _is_valid(traceparent):
        raise ValueError(f"not a W3C traceparent: {traceparent!r}")
    return [(TRACEPARENT_HEADER, traceparent.encode("ascii"))]


def traceparent_from_headers(
    headers: Iterable[tuple[str, bytes | str | None]] | None,
) -> str | None:
    """The ``traceparent`` of a consumed message, or None if absent or malformed.

    A malformed header is ignored, not raised: a bad trace must never make a record poison.
    """
    for name, value in headers or ():
        if name != TRACEPARENT_HEADER or value is None:
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        return text if _is_valid(text) else None
    return None
