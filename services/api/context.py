"""The request id: taken from ``X-Request-ID`` (or made), returned in the response, put
on every log line of the request and into the headers of every event it causes."""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
import uuid

__all__ = [
    "REQUEST_ID_EVENT_HEADER",
    "REQUEST_ID_HEADER",
    "RequestIdLogFilter",
    "bind_request_id",
    "current_request_id",
    "new_request_id",
    "unbind_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
#: The Kafka header carrying the request id of the request that caused an event.
REQUEST_ID_EVENT_HEADER = "x-request-id"

# A caller's id is kept if it is short and printable (it ends up in logs and headers).
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sidestream_request_id", default=None
)


# Made ids: a random per-process prefix and a counter -- unique without a call to the
# kernel's random source per request (os.urandom is a syscall, slow on some VMs).
_PREFIX = uuid.uuid4().hex[:16]
_COUNTER = itertools.count(1)


def new_request_id(incoming: str | None) -> str:
    """``incoming`` when it is acceptable, else a fresh id (32 hex digits)."""
    if incoming and _ACCEPTABLE.fullmatch(incoming):
        return incoming
    return f"{_PREFIX}{next(_COUNTER):016x}"


def current_request_id() -> str | None:
    """The id of the request being served by this task, if any."""
    return _request_id.get()


def bind_request_id(request_id: str) -> contextvars.Token[str | None]:
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token[str | None]) -> None:
    _request_id.reset(token)


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every record logged while a request is served (the JSON
    formatter then writes it as a field). Install on the process's handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = _request_id.get()
            if request_id is not None:
                record.request_id = request_id
        return True
