"""The outermost layer of every request: request id, RED metrics, the access log, the
rate-limit headers, and a problem response for anything unhandled.

A plain ASGI middleware (not ``BaseHTTPMiddleware``): it adds no task or stream per
request, and it sees ``scope["route"]`` after routing, so metrics are labelled with the
route template, not the raw path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.context import (
    REQUEST_ID_HEADER,
    bind_request_id,
    new_request_id,
    unbind_request_id,
)
from services.api.errors import problem_response
from services.api.metrics import ApiMetrics
from services.ratelimit import RateLimitDecision

__all__ = ["RATE_LIMIT_STATE", "BodyLimitMiddleware", "RequestMiddleware"]

logger = logging.getLogger("services.api.access")

#: Key in the request state where the rate-limit dependency leaves its decision.
RATE_LIMIT_STATE = "rate_limit"
_UNMATCHED = "<unmatched>"


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else _UNMATCHED


class RequestMiddleware:
    """Wraps the app: binds the request id, measures, logs, adds headers."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, access_log: bool = True) -> None:
        self.app = app
        self._metrics = metrics
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = new_request_id(incoming)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = bind_request_id(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                decision = state.get(RATE_LIMIT_STATE)
                if isinstance(decision, RateLimitDecision):
                    for name, value in decision.headers().items():
                        if name not in headers:
                            headers[name] = value
            await send(message)

        self._metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            status = 500
            if response_started:
                raise  # too late for a problem response: let the server drop the connection
            response = problem_response(500, "Internal Server Error")
            await response(scope, receive, send_with_headers)
        finally:
            self._metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            method, route = scope["method"], _route_template(scope)
            self._metrics.requests.labels(method, route, str(status)).inc()
            self._metrics.duration.labels(method, route).observe(elapsed)
            if status >= 500:
                self._metrics.errors.labels(method, route).inc()
            if self._access_log:
                logger.info(
                    "%s %s %d %.1fms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={
                        "request_id": request_id,
                        "method": method,
                        "route": route,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            unbind_request_id(token)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413, while they are read.

    A ``Content-Length`` above the limit is answered before anything is read; a body
    without one (chunked) is counted as it arrives, and the read fails at the first chunk
    past the limit, so at most ``max_bytes`` plus one chunk is ever buffered.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self._max:
                    response = problem_response(
                        413, "Content Too Large", f"the body exceeds {self._max} bytes"
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    # FastAPI re-raises an HTTPException met while reading the body;
                    # the app's handler turns it into a problem response.
                    raise HTTPException(413, f"the body exceeds {self._max} bytes")
            return message

        await self.app(scope, limited_receive, send)
