"""The root of the consumers package's errors.

``Fenced`` (offsets), ``DeadLetterError`` (dead letters) and ``OpsError`` (the operator
tools' tree) hang under :class:`ConsumerError`. The delivery and live-analytics workers keep
their own trees directly under :class:`runtime.errors.SidestreamError`, so they need nothing
from the batch runtime's internals.
"""

from __future__ import annotations

from runtime.errors import SidestreamError

__all__ = ["ConsumerError"]


class ConsumerError(SidestreamError):
    """Base of the errors the consumers' batch runtime and operator tools raise on purpose."""
