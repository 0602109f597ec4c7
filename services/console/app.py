"""The operator console: a FastAPI app of server-rendered pages over the platform's own
operator library (``consumers.ops``, ``consumers.delivery.admin``, the schema catalog).

:func:`create_app` takes everything injected — settings, what to show, the key
verifier, the audit trail — so the CLI (``sidestream console``) and the tests build it
the same way.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from consumers.ops import TopicReader
from runtime import Settings
from services.console.access import KeyVerifier, Principal, SessionStore
from services.console.audit import AuditTrail
from services.console.replays import ReplayJob, ReplayJobs
from services.console.resources import ConsoleConfig, ConsoleResources
from services.console.views import (
    analytics,
    dead_letters,
    deliveries,
    pipelines,
    replay,
    schemas,
)
from services.console.web import (
    SESSION_COOKIE,
    STATIC_DIR,
    first,
    in_thread,
    read_form,
    render,
    sessions_of,
    warm_templates,
)

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

#: Pages in the navigation bar: (path, label).
NAV = (
    ("/pipelines", "Pipelines"),
    ("/dead-letters", "Dead letters"),
    ("/replay", "Replay"),
    ("/schemas", "Schemas"),
    ("/deliveries", "Deliveries"),
    ("/analytics", "Analytics"),
    ("/bench", "Bench"),
)


def create_app(
    settings: Settings,
    config: ConsoleConfig,
    *,
    verifier: KeyVerifier,
    audit: AuditTrail,
    sessions: SessionStore | None = None,
    secure_cookies: bool = False,
    link_sign_in: bool = False,
    open_reader: Callable[[], TopicReader] | None = None,
) -> FastAPI:
    """The console app; its resources open at start-up and close at shutdown.

    Args:
        verifier: turns an API key into a principal (the API's key store).
        audit: where actions are recorded.
        secure_cookies: mark the session cookie ``Secure`` (behind HTTPS).
        link_sign_in: accept the key in the sign-in URL (``/login?key=``), for the link
            `sidestream console` prints locally; off, a key in a URL is ignored (URLs end
            up in histories and logs).
        open_reader: builds the dead-letter index's topic readers (default: from
            ``settings``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = ConsoleResources(settings, config, audit, open_reader=open_reader)
        app.state.resources = resources
        resources.start()
        # What a first view would otherwise pay for: compiling templates, the ledgers.
        await in_thread(warm_templates)
        await in_thread(resources.prefetch_ledgers)

        def recorded(job: ReplayJob) -> None:
            audit.record(
                actor=job.started_by,
                action="replay.run",
                resource_type="consumer_group",
                resource_id=job.group,
                succeeded=job.state == "completed",
                details={
                    "job": job.id,
                    "state": job.state,
                    "start": str(job.request.start or "resume"),
                    "records": job.done,
                    "error": job.error or "",
                },
            )

        app.state.replays = ReplayJobs(settings, resources.schema, on_finish=recorded)
        try:
            yield
        finally:
            await in_thread(app.state.replays.stop_all)
            await in_thread(resources.close)

    app = FastAPI(
        title="Sidestream console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sessions = sessions or SessionStore()
    app.state.nav = NAV
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        # Only our own script and styles (inline style attributes draw the progress bars);
        # no framing (clickjacking), no referrer (a sign-in link must not leak).
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.middleware("http")
    async def pages_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # While a request is served, the dead-letter index's reads step aside.
        resources: ConsoleResources | None = getattr(app.state, "resources", None)
        if resources is None:  # not started (or already shut down)
            return await call_next(request)
        with resources.foreground.serving():
            return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 303 and exc.headers:
            return RedirectResponse(exc.headers["Location"], status_code=303)
        session = sessions_of(request).get(request.cookies.get(SESSION_COOKIE))
        return render(
            request,
            "error.html",
            session,
            status_code=exc.status_code,
            message=str(exc.detail),
            title="Refused" if exc.status_code == 403 else "Error",
        )

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, key: str | None = None) -> Response:
        # ``?key=`` lets `sidestream console` print one link that signs in at once.
        if key and link_sign_in:
            return await _sign_in(request, key)
        return render(request, "login.html", None, title="Sign in", error=None)

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await read_form(request)
        return await _sign_in(request, first(form, "key"))

    async def _sign_in(request: Request, key: str) -> Response:
        try:
            principal = await verifier.verify(key) if key else None
        except (ConnectionError, TimeoutError) as exc:
            unreachable = f"the key store did not answer ({exc}); try again"
            return render(
                request, "login.html", None, status_code=503, title="Sign in", error=unreachable
            )
        refusal = _refusal(principal)
        if principal is None or refusal is not None:
            return render(
                request,
                "login.html",
                None,
                status_code=401,
                title="Sign in",
                error=refusal or "unknown or revoked key",
            )
        session = sessions_of(request).open(principal)
        response = RedirectResponse("/pipelines", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            httponly=True,
            samesite="strict",
            secure=secure_cookies,
            path="/",
        )
        logger.info("console: %s signed in as %s", principal.name, principal.role)
        return response

    def _refusal(principal: Principal | None) -> str | None:
        if principal is None:
            return "unknown or revoked key"
        if principal.role is None:
            return f"{principal.name} has neither the read nor the admin scope"
        if config.operator_tenants is not None and principal.tenant not in config.operator_tenants:
            return (
                f"{principal.name} belongs to tenant {principal.tenant}; the console takes keys "
                f"of {', '.join(sorted(config.operator_tenants))} only"
            )
        return None

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        store = sessions_of(request)
        session = store.get(request.cookies.get(SESSION_COOKIE))
        form = await read_form(request)
        if session is not None and session.csrf_ok(first(form, "csrf")):
            store.close(session.token)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    app.include_router(pipelines.router)
    app.include_router(dead_letters.router)
    app.include_router(replay.router)
    app.include_router(schemas.router)
    app.include_router(deliveries.router)
    app.include_router(analytics.router)
    return app
