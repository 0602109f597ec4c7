"""The API's errors, and how each becomes a problem response (RFC 9457).

Handlers raise :class:`ApiError` subclasses; third-party errors that mean the same thing
(a full Kafka queue, an unreachable database, a slow loader) are mapped here too, so every
error body has one shape and carries the request id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from producers import Backpressure, PublishError
from runtime.errors import SidestreamError
from services.api.context import current_request_id
from services.api.models import Problem
from services.cache import LoaderTimeoutError
from services.ratelimit import RateLimitDecision

__all__ = [
    "ApiError",
    "ConflictError",
    "ContentTooLargeError",
    "ForbiddenError",
    "NotFoundError",
    "PreconditionFailedError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "install_error_handlers",
    "problem_response",
]

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


class ApiError(SidestreamError):
    """An error with an HTTP status, a short title and optional headers."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = dict(headers or {})


class UnauthorizedError(ApiError):
    """No credential, or one that is not valid (unknown, expired, revoked): 401 with a
    ``WWW-Authenticate`` challenge (RFC 6750: ``error="invalid_token"`` when a token was
    sent)."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, invalid: bool = False) -> None:
        challenge = 'Bearer realm="sidestream"'
        if invalid:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class ForbiddenError(ApiError):
    """The credential is valid but not for this: another tenant, or a missing scope."""

    status = 403
    title = "Forbidden"

    def __init__(self, detail: str, *, insufficient_scope: str | None = None) -> None:
        headers = {}
        if insufficient_scope is not None:
            headers["WWW-Authenticate"] = (
                f'Bearer realm="sidestream", error="insufficient_scope", '
                f'scope="{insufficient_scope}"'
            )
        super().__init__(detail, headers=headers)


class ContentTooLargeError(ApiError):
    status = 413
    title = "Content Too Large"


class NotFoundError(ApiError):
    status = 404
    title = "Not Found"


class ConflictError(ApiError):
    status = 409
    title = "Conflict"


class PreconditionFailedError(ApiError):
    """``If-Match`` named a version that is not the current one (or none at all).

    Attributes:
        current_version: the version the resource is at, when known (sent as ``ETag``).
    """

    status = 412
    title = "Precondition Failed"

    def __init__(self, detail: str, *, current_version: int | None = None) -> None:
        headers = {} if current_version is None else {"ETag": f'"{current_version}"'}
        super().__init__(detail, headers=headers)
        self.current_version = current_version


class RateLimitedError(ApiError):
    """The tenant/client used up its rate; the headers say when to come back."""

    status = 429
    title = "Too Many Requests"

    def __init__(self, decision: RateLimitDecision) -> None:
        super().__init__(
            f"rate limit of {decision.limit} requests exceeded; retry after "
            f"{decision.headers().get('Retry-After', '1')}s",
            headers=decision.headers(),
        )
        self.decision = decision


class ServiceUnavailableError(ApiError):
    """A dependency cannot take the request now; retry after ``retry_after`` seconds."""

    status = 503
    title = "Service Unavailable"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(detail, headers={"Retry-After": str(seconds)})
        self.retry_after = seconds


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """A problem-details response carrying the current request id."""
    body = Problem(
        title=title, status=status, detail=detail, request_id=current_request_id(), errors=errors
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in jsonable_encoder(exc.errors())
    ]
    return problem_response(
        422, "Unprocessable Content", "the request does not match the schema", errors=errors
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette's 405 names only the first
    matching route's)."""
    methods: set[str] = set()
    path = request.url.path
    for route in iter_route_contexts(request.app.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(route.methods or ())
    return ", ".join(sorted(methods))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = _allowed_methods(request)
    return problem_response(
        exc.status_code,
        _TITLES.get(exc.status_code, "Error"),
        str(exc.detail) if exc.detail else None,
        headers=headers,
    )


async def _publish_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PublishError)
    cause = exc.__cause__
    error = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
    if isinstance(error, KafkaError) and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
        return problem_response(
            413, "Content Too Large", "the encoded event is larger than the broker accepts"
        )
    logger.warning("%s", exc)
    return problem_response(
        503, "Service Unavailable", "the event could not be queued", headers={"Retry-After": "1"}
    )


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    # A value the schema let through but Postgres refuses (class 22): the caller's data,
    # not our failure. Validation should catch these first; this keeps it a 4xx.
    logger.warning("database refused a value: %s", type(exc).__name__)
    return problem_response(
        422, "Unprocessable Content", "a value cannot be stored (e.g. out of range)"
    )


async def _backpressure(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Backpressure)
    error = ServiceUnavailableError(
        "the event queue is full; retry later", retry_after=exc.retry_after
    )
    return problem_response(503, error.title, error.detail, headers=error.headers)


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable: %s", exc)
    return problem_response(
        503, "Service Unavailable", "the database is unavailable", headers={"Retry-After": "1"}
    )


async def _loader_timeout(_request: Request, exc: Exception) -> JSONResponse:
    logger.warning("%s", exc)
    return problem_response(
        503, "Service Unavailable", "reading took too long", headers={"Retry-After": "1"}
    )


_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Content Too Large",
    415: "Unsupported Media Type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Register every handler above on ``app``."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Backpressure, _backpressure)
    app.add_exception_handler(PoolTimeout, _database_unavailable)
    app.add_exception_handler(psycopg.OperationalError, _database_unavailable)
    app.add_exception_handler(LoaderTimeoutError, _loader_timeout)
    app.add_exception_handler(PublishError, _publish_error)
    app.add_exception_handler(psycopg.errors.DataError, _data_error)


#: OpenAPI descriptions of the error responses, per status.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body is not valid JSON (or not UTF-8)."},
    401: {
        "model": Problem,
        "description": "No valid credential: missing, unknown, expired or revoked.",
        "headers": {
            "WWW-Authenticate": {
                "description": 'The challenge: `Bearer realm="sidestream"`.',
                "schema": {"type": "string"},
            }
        },
    },
    403: {
        "model": Problem,
        "description": "The credential belongs to another tenant, or lacks the scope.",
    },
    413: {"model": Problem, "description": "The body (or the event it makes) is too large."},
    404: {"model": Problem, "description": "No such project in this tenant."},
    409: {"model": Problem, "description": "Another live project of the tenant has this name."},
    412: {"model": Problem, "description": "`If-Match` does not name the current version."},
    422: {"model": Problem, "description": "The request does not match the schema."},
    429: {
        "model": Problem,
        "description": "Rate limit exceeded (per authenticated principal and scope).",
        "headers": {
            name: {"description": doc, "schema": {"type": "integer"}}
            for name, doc in (
                ("RateLimit-Limit", "Requests allowed per window."),
                ("RateLimit-Remaining", "Requests left now (0)."),
                ("RateLimit-Reset", "Seconds until the quota is full again."),
                ("Retry-After", "Seconds until a request is admitted."),
            )
        },
    },
    503: {
        "model": Problem,
        "description": "Kafka's queue is full, or the database is unavailable; retry later.",
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        },
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of ``statuses``."""
    return {status: ERROR_RESPONSES[status] for status in statuses}
