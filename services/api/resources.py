"""What an API process holds open: pools, the cache and its L1 subscriber, the rate
limiter, the event publisher. Opened by the app's lifespan, closed in reverse order."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from producers import AsyncEventPublisher, AsyncOutbox, EventPublisher
from runtime import Settings
from services.api.auth import ApiKeyAuthenticator, BearerAuthenticator, JwtAuthenticator
from services.api.config import ApiConfig
from services.api.metrics import ApiMetrics
from services.api.store import ProjectStore
from services.cache import L1, CacheUnavailableError, L1Subscriber, VersionedCache, cache_redis
from services.entities import collection_of, item_key
from services.ratelimit import RateLimit, RateLimiter

__all__ = ["ApiResources", "open_resources"]

logger = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[Any]]


@dataclass(slots=True)
class ApiResources:
    """The open resources of one API instance (``app.state.resources``)."""

    settings: Settings
    config: ApiConfig
    metrics: ApiMetrics
    pool: Pool
    read_pool: Pool
    redis: Redis
    cache: VersionedCache
    subscriber: L1Subscriber | None
    limiter: RateLimiter | None
    publisher: AsyncEventPublisher
    outbox: AsyncOutbox
    #: API keys and JWTs (``None`` with ``SIDESTREAM_API_AUTH=none``).
    authenticator: BearerAuthenticator | None = None
    #: The rate limit per scope (``None``: no limiting).
    rate_limits: Mapping[str, RateLimit] | None = None
    store: ProjectStore = field(default_factory=ProjectStore)
    draining: bool = False

    async def invalidate_after_write(
        self, tenant: str, entity_type: str, entity_id: str, version: int
    ) -> None:
        """Best effort, after a commit: tombstone the entity's key and bump its lists.

        The invalidation consumer does the same from the committed event (the guarantee);
        this only makes it sooner. A failure is counted and otherwise ignored.
        """
        if not self.config.invalidate_on_write:
            return
        try:
            await self.cache.invalidate(item_key(tenant, entity_type, entity_id), version)
            await self.cache.bump_generation(tenant, collection_of(entity_type))
        except CacheUnavailableError as exc:
            self.metrics.write_invalidations.labels("failed").inc()
            logger.info("direct invalidation skipped (%s); the consumer will do it", exc)
            return
        self.metrics.write_invalidations.labels("done").inc()


def jwt_authenticator(settings: Settings) -> JwtAuthenticator | None:
    """The JWT authenticator ``settings`` describe, if any (the JWKS file is read now:
    a missing file fails at start)."""
    if not settings.api_jwt_jwks:
        return None
    # The settings check both are set with a JWKS.
    assert settings.api_jwt_issuer
    assert settings.api_jwt_audience
    return JwtAuthenticator(
        jwks=settings.api_jwt_jwks,
        issuer=settings.api_jwt_issuer,
        audience=settings.api_jwt_audience,
        algorithms=[a.strip() for a in settings.api_jwt_algorithms.split(",") if a.strip()],
        tenant_claim=settings.api_jwt_tenant_claim,
        scope_claim=settings.api_jwt_scope_claim,
    )


def _pool(dsn: str, *, settings: Settings, config: ApiConfig, name: str, schema: str) -> Pool:
    # Only the schema: falling back to public would let a missing table resolve elsewhere.
    options = f"-c search_path={schema} -c statement_timeout={config.statement_timeout_ms}"
    return AsyncConnectionPool(
        dsn,
        min_size=settings.postgres_pool_min,
        max_size=settings.postgres_pool_max,
        kwargs={"autocommit": True, "options": options},
        timeout=config.pool_timeout_s,
        name=name,
        open=False,
    )


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    config: ApiConfig,
    *,
    registry: CollectorRegistry,
    publisher: AsyncEventPublisher | None = None,
) -> AsyncIterator[ApiResources]:
    """Open everything; on exit close it: L1 subscriber, cache, publisher (flushed
    within ``shutdown_flush_s``), Redis, pools.

    Pools open without waiting for Postgres (a process must start while it is down;
    ``/readyz`` tells); connections are made in the background.
    """
    schema = config.schema_for(settings)
    primary_dsn = settings.postgres_dsn.get_secret_value()
    async with contextlib.AsyncExitStack() as stack:
        pool = _pool(primary_dsn, settings=settings, config=config, name="api", schema=schema)
        await pool.open(wait=False)
        stack.push_async_callback(pool.close)
        read_pool = pool
        if config.read_dsn:
            read_pool = _pool(
                config.read_dsn, settings=settings, config=config, name="api-read", schema=schema
            )
            await read_pool.open(wait=False)
            stack.push_async_callback(read_pool.close)

        redis = cache_redis(settings, client_name=config.producer)
        stack.push_async_callback(redis.aclose)

        if publisher is None:
            publisher = AsyncEventPublisher(
                EventPublisher(
                    settings=settings,
                    config=dict(config.publisher_config),
                    registry=registry,
                    producer=config.producer,
                    max_queue=config.publisher_max_queue,
                )
            )
        owned_publisher = publisher

        async def close_publisher() -> None:
            left = await owned_publisher.close(timeout=config.shutdown_flush_s)
            if left:
                logger.warning("shutdown: %d events were not delivered in time", left)

        stack.push_async_callback(close_publisher)

        l1 = (
            L1(max_entries=config.l1_max_entries, ttl=config.l1_ttl_s)
            if config.l1_ttl_s is not None
            else None
        )
        cache = VersionedCache(
            redis=redis, namespace=config.cache_namespace, registry=registry, l1=l1
        )
        stack.push_async_callback(cache.aclose)
        subscriber = None
        if l1 is not None:
            subscriber = L1Subscriber(cache)
            await subscriber.start()
            stack.push_async_callback(subscriber.stop)
            # Serving before the subscription exists would let the L1 miss invalidations;
            # wait briefly, but start anyway if Redis is down (the L1 TTL bounds it).
            if not await subscriber.wait_subscribed(2.0):
                logger.warning("starting without the invalidation subscription (Redis down?)")

        limiter = None
        rate_limits = config.rate_limits(settings)
        if rate_limits:
            limiter = RateLimiter(
                redis=redis,
                prefix=config.cache_namespace,
                limit=next(iter(rate_limits.values())),
                name=config.producer,
                registry=registry,
            )
        authenticator = None
        if settings.api_auth == "keys":
            authenticator = BearerAuthenticator(
                ApiKeyAuthenticator(
                    pool=pool,
                    hash_key=settings.api_key_hash_secret.get_secret_value().encode(),
                    cache_ttl_s=settings.api_key_cache_ttl_s,
                ),
                jwt_authenticator(settings),
            )
        yield ApiResources(
            settings=settings,
            config=config,
            metrics=ApiMetrics.for_registry(registry),
            pool=pool,
            read_pool=read_pool,
            redis=redis,
            cache=cache,
            subscriber=subscriber,
            limiter=limiter,
            publisher=publisher,
            outbox=AsyncOutbox(schema=schema),
            authenticator=authenticator,
            rate_limits=rate_limits,
        )
