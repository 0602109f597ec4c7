"""Errors of the services package outside the cache (which has its own tree).

The invalidation errors subclass :class:`ConnectionError` / :class:`TimeoutError` on
purpose: the consumers' batch runtime treats those as transient
(:func:`runtime.retry.is_transient`), so a batch whose keys could not be invalidated is
retried, with its offsets uncommitted, instead of being skipped.
"""

from __future__ import annotations

from runtime.errors import SidestreamError

__all__ = [
    "InvalidationError",
    "InvalidationTimeoutError",
    "InvalidationUnavailableError",
    "ServicesError",
]


class ServicesError(SidestreamError):
    """Base of the errors raised by :mod:`services` (outside :mod:`services.cache`)."""


class InvalidationError(ServicesError):
    """A batch of invalidations did not complete; the batch must be retried.

    Attributes:
        keys: how many item keys the batch was to invalidate.
    """

    def __init__(self, message: str, *, keys: int) -> None:
        super().__init__(message)
        self.keys = keys


class InvalidationUnavailableError(InvalidationError, ConnectionError):
    """Redis was unreachable while invalidating (transient: the batch is retried).

    Attributes:
        operation: the cache operation that failed (``invalidate_many``, ...).
    """

    def __init__(self, message: str, *, keys: int, operation: str) -> None:
        super().__init__(message, keys=keys)
        self.operation = operation


class InvalidationTimeoutError(InvalidationError, TimeoutError):
    """The invalidations of a batch took longer than the bound (transient: retried).

    Attributes:
        timeout_s: the bound, in seconds.
    """

    def __init__(self, message: str, *, keys: int, timeout_s: float) -> None:
        super().__init__(message, keys=keys)
        self.timeout_s = timeout_s
