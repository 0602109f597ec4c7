"""The app factory: ``create_app(settings, config=...)`` → a FastAPI app whose lifespan
opens (and on shutdown closes) everything the routes use.

Shutdown (uvicorn on SIGTERM): stop accepting connections, let in-flight requests finish
(``timeout_graceful_shutdown``), then the lifespan's exit: ``/readyz`` says draining,
the L1 subscriber stops, queued events are flushed to Kafka (bounded), pools close.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from prometheus_client import REGISTRY, CollectorRegistry

from producers import AsyncEventPublisher
from runtime import Settings
from services.api import link_hosts, notifications, projects, webhook_endpoints
from services.api.auth import check_tenant_routes
from services.api.config import ApiConfig
from services.api.errors import PROBLEM_JSON, install_error_handlers
from services.api.metrics import ApiMetrics
from services.api.middleware import BodyLimitMiddleware, RequestMiddleware
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

    docs = settings.api_docs_enabled
    app = FastAPI(
        title="Sidestream reference API",
        version=API_VERSION,
        description=(
            "Projects per tenant (writes go through the transactional outbox, reads "
            "through the versioned cache) and notification requests (queued on Kafka). "
            "Every `/v1/tenants/{tenant}/...` route needs `Authorization: Bearer <API key>` "
            "of that tenant with the scope its summary names. Errors are "
            "`application/problem+json` (RFC 9457)."
        ),
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(projects.router)
    app.include_router(notifications.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(link_hosts.router)
    app.include_router(ops_router(registry))
    check_tenant_routes(app)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(
        RequestMiddleware, metrics=ApiMetrics.for_registry(registry), access_log=config.access_log
    )
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with error responses under the media type they are served
    as (``application/problem+json``; FastAPI labels every model ``application/json``)."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                for status, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status[:1] in "45" and "application/json" in content:
                        content[PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = document
    return app.openapi_schema
