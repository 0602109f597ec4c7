"""Cache-aside for async services, on Redis: versioned entries that a slow reader can
never roll back, stampede protection, XFetch early refresh, list generations, and an
optional in-process L1 that every process evicts on invalidation.

Read path: :meth:`VersionedCache.get_or_load`. Write path (the invalidation consumer):
:meth:`VersionedCache.invalidate` / :meth:`~VersionedCache.invalidate_many` /
:meth:`~VersionedCache.bump_generation`. Each process with an :class:`L1` runs one
:class:`L1Subscriber`.
"""

from services.cache.cache import VersionedCache
from services.cache.connection import cache_redis
from services.cache.entry import NotFound, Versioned
from services.cache.errors import CacheError, CacheUnavailableError, LoaderTimeoutError
from services.cache.l1_subscriber import L1Subscriber
from services.cache.loading import ListLoader, Loader
from services.cache.local import L1

__all__ = [
    "L1",
    "CacheError",
    "CacheUnavailableError",
    "L1Subscriber",
    "ListLoader",
    "Loader",
    "LoaderTimeoutError",
    "NotFound",
    "Versioned",
    "VersionedCache",
    "cache_redis",
]
