"""An async Redis client tuned for caching: short timeouts, a bounded pool, one retry.

``runtime.clients.redis_client`` builds the synchronous client; the cache needs
``redis.asyncio``, and it wants tighter limits than a general client: a cache that
answers slowly is worse than no cache, because every request waits on it.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from runtime import Settings


def cache_redis(
    settings: Settings,
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    max_connections: int = 64,
    pool_timeout: float = 0.5,
    **kwargs: Any,
) -> Redis:
    """A ``redis.asyncio.Redis`` for :class:`~services.cache.VersionedCache`.

    Args:
        settings: where Redis is (``settings.redis_url``).
        socket_timeout: seconds to wait for a reply before the read counts as failed
            (and the cache reads through the loader).
        socket_connect_timeout: seconds to wait for a connection.
        max_connections: pool bound; in-process single flight keeps the need small.
        pool_timeout: seconds to wait for a free pooled connection before failing.
        kwargs: passed to the connection pool (e.g. ``client_name``).

    The client retries once, at once: that replaces a pooled connection that died with
    a restarted server, without stretching an outage into several timeouts. Close it
    with ``await client.aclose()``.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "max_connections": max_connections,
        "timeout": pool_timeout,
        "retry": Retry(NoBackoff(), 1),
        "decode_responses": False,
    }
    options.update(kwargs)
    pool = BlockingConnectionPool.from_url(settings.redis_url.get_secret_value(), **options)
    return Redis.from_pool(pool)
