"""Ports without races: a server binds port 0 itself and reports the port it got.

Picking a free port, closing it, and letting a child bind it later is a race: on a busy
machine another process takes the port in between ("Address already in use"). So a
process that Sidestream starts for a test, the demo, a benchmark or a chaos scenario binds
port 0 and reports what it got in a **ready file**, which the parent reads:

1. the parent passes a fresh path in ``SIDESTREAM_READY_FILE`` (see :class:`ReadyFile`);
2. the child's command-line edge calls :func:`announce_ready` once with that setting;
   every server of the process (the metrics/probe server, the API) calls
   :func:`report_listening` once its socket listens, which rewrites the file atomically
   as JSON: ``{"pid": 4242, "addresses": {"metrics": "127.0.0.1:40123"}}``;
3. the parent waits for the address it needs with :meth:`ReadyFile.wait` (bounded), and
   gets one readable error when the child exits first.

:func:`free_port` stays for the servers that cannot report their port: the local stack's
Kafka (it advertises its port to clients), Postgres and Redis take it on the command line.
:class:`devtools.localstack.server.LocalServer` with ``port=0`` uses it and retries with
another port when one is taken in the gap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime.errors import ConfigError

__all__ = [
    "ReadyFile",
    "announce_ready",
    "free_port",
    "listen_on",
    "refused_port",
    "report_listening",
]

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - names, not binds

# Set once at process start by the command-line edge (like logging's configuration).
_ready_path: Path | None = None
_reported: dict[str, str] = {}
_lock = threading.Lock()


def announce_ready(path: Path | None) -> None:
    """Make every server this process starts from now on report its address in
    ``path`` (``None`` turns it off). Called once at process start, with the
    ``SIDESTREAM_READY_FILE`` setting."""
    global _ready_path
    with _lock:
        _ready_path = path
        _reported.clear()


def report_listening(name: str, host: str, port: int) -> None:
    """Record that this process's server ``name`` listens on ``host:port`` (no-op unless
    :func:`announce_ready` named a file). Call only once the socket listens: the parent
    connects as soon as it reads the file.

    Raises:
        OSError: the ready file cannot be written (the parent would wait in vain).
    """
    with _lock:
        if _ready_path is None:
            return
        reachable = LOCALHOST if host in _WILDCARD_HOSTS else host
        _reported[name] = f"{reachable}:{port}"
        body = {"pid": os.getpid(), "addresses": dict(_reported)}
        _ready_path.parent.mkdir(parents=True, exist_ok=True)
        scratch = _ready_path.with_name(f".{_ready_path.name}.{os.getpid()}.tmp")
        scratch.write_text(json.dumps(body) + "\n")
        scratch.replace(_ready_path)  # atomic: the parent never reads half a file


class ReadyFile:
    """The parent's side: a fresh path to hand to one child, and the wait for its report.

    Args:
        directory: where the file goes (default: a new private temp dir, removed by
            :meth:`remove`); a log directory keeps it next to the child's log.
        name: the file's name, e.g. the child's role.
    """

    def __init__(self, directory: Path | None = None, name: str = "ready") -> None:
        self._own_dir = directory is None
        base = (
            Path(tempfile.mkdtemp(prefix="sidestream-ready-")) if directory is None else directory
        )
        base.mkdir(parents=True, exist_ok=True)
        self.path = base / f"{name}.ready.json"
        self.path.unlink(missing_ok=True)  # a report from an earlier child is not ours

    def env(self) -> dict[str, str]:
        """The variable that makes the child report here."""
        return {"SIDESTREAM_READY_FILE": str(self.path)}

    def read(self, pid: int | None = None) -> dict[str, str]:
        """The addresses reported so far (by ``pid`` if given), ``{}`` if none."""
        try:
            body: dict[str, Any] = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        if pid is not None and body.get("pid") != pid:
            return {}
        return {str(k): str(v) for k, v in dict(body.get("addresses", {})).items()}

    def wait(
        self,
        process: subprocess.Popen[Any],
        name: str,
        *,
        timeout: float,
        log: Path | None = None,
    ) -> str:
        """The ``host:port`` that ``process`` reported for its server ``name``.

        Raises:
            RuntimeError: the process exited before reporting (its exit code and log).
            TimeoutError: no report within ``timeout`` seconds.
        """
        where = f"; see {log}" if log is not None else ""
        deadline = time.monotonic() + timeout
        while True:
            address = self.read(process.pid).get(name)
            if address is not None:
                return address
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{name} (pid {process.pid}) exited with code {code} before it "
                    f"reported its port{where}"
                )
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{name} (pid {process.pid}) did not report its port within "
                    f"{timeout:.0f}s{where}"
                )
            time.sleep(0.05)

    def remove(self) -> None:
        """Delete the file (and the temp dir this object made)."""
        self.path.unlink(missing_ok=True)
        if self._own_dir:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()


def listen_on(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (for ``uvicorn.Server.run(sockets=...)``);
    :class:`~runtime.errors.ConfigError` saying why not, in one line with the fix.

    Bound before the server starts: uvicorn binding it itself would start the app, log
    the failure among its start-up and shutdown lines and exit 3.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except socket.gaierror:
        raise ConfigError(
            f"cannot listen on {host}:{port} (cannot resolve host) — check --host"
        ) from None
    except OSError as exc:
        # create_server's message adds the address again: the errno's text is enough.
        reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({reason}) — choose another --port or --host, "
            "or stop what listens there"
        ) from None


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nothing listens on *right now*.

    Racy by nature: the port is free when this returns, not when someone binds it. Use
    it only for a server that cannot bind port 0 and report what it got (the local
    stack's servers, which need their port on the command line), and retry on a clash.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def refused_port(host: str = LOCALHOST) -> Iterator[int]:
    """A port that refuses connections for as long as the block runs.

    The socket is bound but never listens: connecting gets ECONNREFUSED, and nobody else
    can bind the port meanwhile (unlike a free port picked and closed).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((host, 0))
        yield int(held.getsockname()[1])
