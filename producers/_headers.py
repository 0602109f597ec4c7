"""Kafka message headers as callers pass them, and the trace context in front of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from schemas import trace_headers
from schemas.headers import TRACEPARENT_HEADER

Headers = Mapping[str, bytes | str | None] | Sequence[tuple[str, bytes | str | None]]
"""Extra headers: a mapping or a sequence of (name, value) pairs."""


def merge_headers(
    traceparent: str | None, headers: Headers | None
) -> list[tuple[str, bytes | str | None]]:
    """The W3C ``traceparent`` header first (if any), then the caller's headers.

    Raises `ValueError` for a malformed traceparent, or one given both ways.
    """
    result: list[tuple[str, bytes | str | None]] = list(trace_headers(traceparent))
    if headers is not None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            if name == TRACEPARENT_HEADER and traceparent is not None:
                raise ValueError("traceparent given twice: as an argument and as a header")
            result.append((name, value))
    return result
