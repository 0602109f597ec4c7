"""``/metrics``, ``/healthz`` and ``/readyz`` for any Sidestream process.

Metrics go into an injected :class:`prometheus_client.CollectorRegistry` (the global
default unless a test passes a fresh one). Health answers "is the process alive";
readiness asks the process's own check (e.g. "consumer assigned and Postgres reachable").

Locally, a process can also register its metrics endpoint for Prometheus's file-based
discovery (``sidestream observe``, ``make observe``): see :func:`announce_targets`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from runtime.ports import report_listening

if TYPE_CHECKING:
    from runtime.settings import Settings

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], bool]

_COMPONENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - names, not binds

# Set once at process start by the CLI (like logging's configuration): where every
# ObservabilityServer of this process registers itself, and under which component.
_announce: tuple[Path, str] | None = None


def targets_dir(stack_dir: Path) -> Path:
    """Where local processes register for scraping: ``<stack_dir>/prometheus/targets``."""
    return stack_dir / "prometheus" / "targets"


def write_target_file(
    directory: Path, component: str, address: str, *, pid: int | None = None
) -> Path:
    """Register ``address`` (``host:port`` serving ``/metrics``) as ``component`` for
    Prometheus's file-based discovery: ``<directory>/<component>-<pid>.json`` (or
    ``-static.json`` without a PID), written atomically. Delete the file to unregister.

    Raises:
        ValueError: ``component`` is not a short lowercase name, or ``address`` has no port.
    """
    if not _COMPONENT.match(component):
        raise ValueError(f"component must be lowercase letters, digits and '-', got {component!r}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be host:port, got {address!r}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{component}-{'static' if pid is None else pid}.json"
    body = [{"targets": [address], "labels": {"component": component}}]
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(body) + "\n")
    scratch.replace(path)
    return path


def announce_targets(directory: Path | None, component: str = "") -> None:
    """Make every :class:`ObservabilityServer` this process starts from now on register
    itself in ``directory`` as ``component`` (and unregister when it stops).

    The CLI calls this once at process start, for the local profile only; ``None``
    turns it off. Registration is best effort: a failure is logged, never raised.
    """
    global _announce
    _announce = None if directory is None else (directory, component)


class PerRegistry:
    """Base of a metrics set that exists once per registry.

    A metric name can be registered only once in a registry, so every component that
    shares one (several publishers, caches or API apps in one process, or a test's fresh
    registry) gets the same set through :meth:`for_registry`. Subclasses take the
    registry as their only constructor argument.
    """

    _lock: ClassVar[threading.Lock]
    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, object]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._lock = threading.Lock()
        cls._instances = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        raise NotImplementedError

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> Self:
        """The metrics of ``registry``, registered on first use."""
        with cls._lock:
            found = cls._instances.get(registry)
            if found is None:
                found = cls(registry)
                cls._instances[registry] = found
            assert isinstance(found, cls)
            return found


def new_registry() -> CollectorRegistry:
    """A fresh registry, so tests and benchmarks never share counters."""
    return CollectorRegistry(auto_describe=True)


class ObservabilityServer:
    """A small threaded HTTP server for metrics and probes.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. ``port=0`` binds any
    free port; the chosen one is in :attr:`port`, and :meth:`start` reports it as
    ``metrics`` in the process's ready file (:mod:`runtime.ports`) when there is one.
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
        self._target_file: Path | None = None

    @classmethod
    def for_worker(
        cls, settings: Settings, *, registry: CollectorRegistry, ready: ReadinessCheck
    ) -> ObservabilityServer:
        """A worker's server, on ``SIDESTREAM_METRICS_HOST`` / ``_PORT``."""
        return cls(
            host=settings.metrics_host, port=settings.metrics_port, registry=registry, ready=ready
        )

    @classmethod
    def for_worker_if(
        cls,
        serve: bool,
        settings: Settings,
        *,
        registry: CollectorRegistry,
        ready: ReadinessCheck,
    ) -> AbstractContextManager[object]:
        """:meth:`for_worker` when ``serve``, else nothing: for workers that also run
        inside another process that serves the metrics itself."""
        if not serve:
            return contextlib.nullcontext()
        return cls.for_worker(settings, registry=registry, ready=ready)

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
        # The socket listens since __init__: a parent that started us on port 0 may come.
        try:
            report_listening("metrics", self._host, self.port)
        except OSError:
            self.stop()  # the parent waits for a report that cannot come: fail, loudly
            raise
        self._target_file = self._register()
        return self

    def stop(self) -> None:
        if self._target_file is not None:
            self._target_file.unlink(missing_ok=True)
            self._target_file = None
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _register(self) -> Path | None:
        if _announce is None:
            return None
        directory, component = _announce
        host = "127.0.0.1" if self._host in _WILDCARD_HOSTS else self._host
        try:
            return write_target_file(directory, component, f"{host}:{self.port}", pid=os.getpid())
        except (OSError, ValueError):
            logger.warning(
                "could not register %s for scraping in %s", self.url, directory, exc_info=True
            )
            return None

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
