"""The app factory: ``create_app(settings, config=...)`` → a FastAPI app whose lifespan
opens (and on shutdown closes) everything the routes use.

Shutdown (uvicorn on SIGTERM): stop accepting connections, let in-flight requests finish
(``timeout_graceful_shutdown``), then the lifespan's exit: ``/readyz`` says draining,
the L1 subscriber stops, queued events are flushed to Kafka (bounded), pools close.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from producers import AsyncEventPublisher
from runtime import Settings
from services.api import link_hosts, notifications, projects, webhook_endpoints
from services.api.config import ApiConfig
from services.api.errors import install_error_handlers
from services.api.metrics import ApiMetrics
from services.api.middleware import RequestMiddleware
from services.api.ops import ops_router
from services.api.resources import open_resources

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def create_app(
    settings: Settings,
    *,
    config: ApiConfig | None = None,
    registry: CollectorRegistry = REGISTRY,
    publisher: AsyncEventPublisher | None = None,
) -> FastAPI:
    """The reference API.

    Args:
        settings: Postgres, Redis and Kafka, pool sizes.
        config: what this instance uses (schema, topics, cache namespace, limits, ...).
        registry: where every metric goes (``/metrics`` exports it); tests pass a fresh
            one per app.
        publisher: an already built publisher to use (and close on shutdown); default: one
            from ``settings`` and ``config``.

    Resources open when the app's lifespan starts (uvicorn does it; in tests, enter
    ``app.router.lifespan_context(app)``) and are at ``app.state.resources``.
    """
    config = config or ApiConfig()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(
            settings, config, registry=registry, publisher=publisher
        ) as resources:
            app.state.resources = resources
            logger.info(
                "api ready: schema %s, cache namespace %s",
                config.schema_for(settings),
                config.cache_namespace,
            )
            try:
                yield
            finally:
                resources.draining = True
                logger.info("api shutting down: flushing events, closing pools")

    app = FastAPI(
        title="Sidestream reference API",
        version=API_VERSION,
        description=(
            "Projects per tenant (writes go through the transactional outbox, reads "
            "through the versioned cache) and notification requests (queued on Kafka)."
        ),
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(projects.router)
    app.include_router(notifications.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(link_hosts.router)
    app.include_router(ops_router(registry))
    app.add_middleware(
        RequestMiddleware, metrics=ApiMetrics.for_registry(registry), access_log=config.access_log
    )
    return app
