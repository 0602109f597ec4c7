"""``/metrics``, ``/healthz`` and ``/readyz`` of the API process."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from services.api.deps import ResourcesDep

__all__ = ["ops_router"]

_READY_TIMEOUT_S = 2.0


def ops_router(registry: CollectorRegistry) -> APIRouter:
    """The operational routes, exporting ``registry``."""
    router = APIRouter(tags=["operations"])

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus."}},
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        # generate_latest walks every collector: off the event loop.
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @router.get("/healthz", summary="Liveness: the process serves requests")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: Postgres answers and the process is not shutting down",
        responses={503: {"description": "Not ready."}},
    )
    async def readyz(resources: ResourcesDep) -> Response:
        if resources.draining:
            return Response('{"status":"draining"}', 503, media_type="application/json")
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                async with resources.pool.connection(timeout=_READY_TIMEOUT_S) as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:
            body = json.dumps({"status": "unavailable", "postgres": type(exc).__name__})
            return Response(body, 503, media_type="application/json")
        return Response('{"status":"ready"}', media_type="application/json")

    return router
