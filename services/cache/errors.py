"""The cache's errors: one small tree, each carrying the key and operation it concerns.

``get_or_load`` never raises :class:`CacheUnavailableError` (it reads through the loader
instead); the write side (``invalidate``, ``bump_generation``) does, because an
invalidation consumer must not commit its offset when the tombstone was not written.
"""

from __future__ import annotations

from runtime.errors import SidestreamError


class CacheError(SidestreamError):
    """Base of every error raised by :mod:`services.cache`."""


class CacheUnavailableError(CacheError):
    """Redis could not be reached (connection refused, reset or timed out).

    Attributes:
        operation: what we were doing, e.g. ``"invalidate"``.
        key: the cache key concerned, or ``None`` for batch and channel operations.
    """

    def __init__(self, operation: str, key: str | None, reason: str) -> None:
        where = f" {key!r}" if key is not None else ""
        super().__init__(f"cache unavailable during {operation}{where}: {reason}")
        self.operation = operation
        self.key = key


class LoaderTimeoutError(CacheError):
    """The loader did not return within ``loader_timeout_ms``.

    The bound exists so that tombstones (which must outlive any in-flight load) can have
    a finite TTL; see :class:`~services.cache.VersionedCache`.

    Attributes:
        key: the cache key being loaded.
        timeout_ms: the bound that was exceeded.
    """

    def __init__(self, key: str, timeout_ms: int) -> None:
        super().__init__(f"loader for {key!r} did not return within {timeout_ms} ms")
        self.key = key
        self.timeout_ms = timeout_ms
