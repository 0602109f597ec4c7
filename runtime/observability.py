"""``/metrics``, ``/healthz`` and ``/readyz`` for any Sidestream process.

Metrics go into an injected :class:`prometheus_client.CollectorRegistry` (the global
default unless a test passes a fresh one). Health answers "is the process alive";
readiness asks the process's own check (e.g. "consumer assigned and Postgres reachable").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], bool]


def new_registry() -> CollectorRegistry:
    """A fresh registry, so tests and benchmarks never share counters."""
    return CollectorRegistry(auto_describe=True)


class ObservabilityServer:
    """A small threaded HTTP server for metrics and probes.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``port=0`` picks a
    free port; the chosen one is in :attr:`port` after start.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        registry: CollectorRegistry = REGISTRY,
        ready: ReadinessCheck | None = None,
    ) -> None:
        self._registry = registry
        self._ready = ready or (lambda: True)
        self._host = host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> ObservabilityServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="observability", daemon=True
        )
        self._thread.start()
        logger.info("serving /metrics /healthz /readyz on %s", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        registry, ready = self._registry, self._ready

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._reply(200, b"ok\n")
                elif path == "/readyz":
                    try:
                        is_ready = ready()
                    except Exception:
                        logger.exception("readiness check raised")
                        is_ready = False
                    if is_ready:
                        self._reply(200, b"ready\n")
                    else:
                        self._reply(503, b"not ready\n")
                else:
                    self._reply(404, b"not found\n")

            def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # probes every few seconds would drown the logs

        return Handler
