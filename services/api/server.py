"""Running the API: :func:`serve` for ``sidestream api`` (blocks; SIGTERM drains), and
:class:`ApiServer`, uvicorn on a thread, for demos, benchmarks and tests."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from types import FrameType

import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry

from runtime import Settings
from runtime.ports import listen_on, report_listening
from services.api.app import create_app
from services.api.config import ApiConfig
from services.api.context import RequestIdLogFilter

__all__ = ["ApiServer", "install_request_id_logging", "serve"]

logger = logging.getLogger(__name__)

#: How long in-flight requests may run after SIGTERM before connections are closed.
GRACEFUL_SHUTDOWN_S = 20
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_request_id_logging() -> None:
    """Put the request id on every log line written while a request is served (adds a
    filter to the root logger's handlers; call once ``configure_logging`` ran)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdLogFilter) for f in handler.filters):
            handler.addFilter(RequestIdLogFilter())


class _ReportingServer(uvicorn.Server):
    """uvicorn, reporting the port it bound (``port=0`` = any) as ``api`` in the process's
    ready file, so a parent that started it never has to pick a free port first."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            for server in self.servers:
                for sock in server.sockets:
                    report_listening("api", self.config.host, int(sock.getsockname()[1]))
                    return


def _uvicorn_config(
    settings: Settings,
    host: str,
    port: int,
    config: ApiConfig | None,
    registry: CollectorRegistry,
) -> uvicorn.Config:
    app = create_app(settings, config=config, registry=registry)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # keep the process's logging (JSON lines with request ids)
        access_log=False,  # the middleware logs each request, with its id
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
        proxy_headers=False,
    )


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    config: ApiConfig | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> None:
    """Serve the API until SIGTERM/SIGINT (uvicorn's handlers), then drain: stop
    accepting, finish in-flight requests (up to 20 s), flush events, close pools.

    Returns normally once drained (so the process exits 0, like the workers), instead of
    uvicorn's default of re-raising the signal at the end. Call after
    ``runtime.configure_logging``. Raises :class:`~runtime.ConfigError` (one line with
    the fix) if ``host:port`` cannot be listened on, before the app starts, and
    ``SystemExit(1)`` if the server did not start otherwise. ``port=0`` binds any free
    port and reports it (as ``api``) in the ready file of :mod:`runtime.ports`.
    """
    install_request_id_logging()
    listening = listen_on(host, port)
    server = _ReportingServer(_uvicorn_config(settings, host, port, config, registry))

    def request_exit(signum: int, _frame: FrameType | None) -> None:
        # Before uvicorn installs its handlers: exit as soon as it starts. After it
        # restored them: the re-raised signal of a completed drain, nothing left to do.
        server.should_exit = True

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, request_exit) for sig in _SIGNALS}
    try:
        server.run(sockets=[listening])
    finally:
        listening.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise SystemExit(1)
    logger.info("api stopped")


class ApiServer:
    """The API on a background thread (uvicorn, real HTTP): ``start()``, ``url``,
    ``stop()``. Signals stay with the caller's main thread."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ApiConfig | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self._server = uvicorn.Server(_uvicorn_config(settings, host, port, config, registry))
        self._thread = threading.Thread(target=self._server.run, name="api-server", daemon=True)
        self._host = host

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; useful with ``port=0``)."""
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("the server is not started")

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ApiServer:
        """Start serving; returns once the lifespan ran and the socket listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError("the API server did not start (see the log)")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Drain like SIGTERM would, and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
