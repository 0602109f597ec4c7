"""The console's plumbing shared by every page: templates, sessions, CSRF, errors.

Pages are server-rendered Jinja2 templates; a few lines of vanilla JavaScript
(``static/console.js``) refresh marked fragments and poll a replay's progress. Reads
are GETs that any signed-in role may make; every action is a POST that
:func:`operator_form` checks (operator role, CSRF token) before anything runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

import psycopg
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from consumers.ops import OpsError
from consumers.ops.format import age
from services.console.access import Session, SessionStore
from services.console.resources import ConsoleResources
from services.errors import ServicesError

__all__ = [
    "SESSION_COOKIE",
    "Form",
    "PageError",
    "SessionDep",
    "current_session",
    "operator_form",
    "render",
    "resources_of",
    "shown_errors",
    "warm_templates",
]

logger = logging.getLogger(__name__)

SESSION_COOKIE = "sidestream_console"
_HERE = Path(__file__).resolve().parent
_MAX_FORM_BYTES = 64 * 1024

T = TypeVar("T")


def _when(value: datetime | float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=_when, number=_number, age=age)

STATIC_DIR = _HERE / "static"


class PageError(ServicesError):
    """A readable one-line problem the page shows instead of its content."""


Form = dict[str, list[str]]


def resources_of(request: Request) -> ConsoleResources:
    resources: ConsoleResources = request.app.state.resources
    return resources


def sessions_of(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def current_session(request: Request) -> Session:
    """The signed-in session; anyone else is sent to the sign-in page."""
    session = sessions_of(request).get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise HTTPException(status_code=303, headers={"Location": "/login"})
    return session


#: A page's parameter: the signed-in session (GET pages; actions use :func:`operator_form`).
SessionDep = Annotated[Session, Depends(current_session)]


async def read_form(request: Request) -> Form:
    """An ``application/x-www-form-urlencoded`` body (bounded)."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPException(status_code=413, detail="form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


async def operator_form(request: Request) -> tuple[Session, Form]:
    """The session and form of an action: signed in, operator, valid CSRF token.

    Raises:
        HTTPException: 303 to sign in, 403 for a read-only principal or a bad token.
    """
    session = current_session(request)
    form = await read_form(request)
    if not session.csrf_ok(first(form, "csrf")):
        raise HTTPException(
            status_code=403, detail="invalid or missing CSRF token: reload the page"
        )
    if not session.can_act:
        raise HTTPException(
            status_code=403,
            detail=f"{session.principal.name} is read-only: actions need an admin-scope key",
        )
    return session, form


def first(form: Form, name: str, default: str = "") -> str:
    return (form.get(name) or [default])[0].strip()


@contextmanager
def shown_errors() -> Iterator[list[str]]:
    """Collect a page's operational problems as one-line messages instead of failing it."""
    problems: list[str] = []
    try:
        yield problems
    except (OpsError, ValueError, KeyError, PageError) as exc:
        problems.append(str(exc).strip("'\""))
    except psycopg.OperationalError as exc:
        problems.append(f"Postgres unreachable: {' '.join(str(exc).split())[:200]}")
    except (ConnectionError, TimeoutError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking library code (psycopg, librdkafka) off the event loop."""
    return await run_in_threadpool(fn)


def warm_templates() -> None:
    """Compile every template once (at start-up), so that no page's first view pays for
    it (about 10 ms a template on a busy machine)."""
    for name in _env.list_templates():
        _env.get_template(name)


def render(
    request: Request, template: str, session: Session | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    flashes: list[str] = []
    if session is not None:
        flashes, session.flashes = session.flashes, []
    body = _env.get_template(template).render(
        request=request,
        session=session,
        flashes=flashes,
        nav=request.app.state.nav,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status_code)
