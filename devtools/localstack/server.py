"""The lifecycle every local server shares: start once, wait until healthy, stop by PID."""

from __future__ import annotations

import logging
import signal
from abc import ABC, abstractmethod
from pathlib import Path

from devtools.localstack.process import (
    PidFile,
    ServerStatus,
    port_is_free,
    spawn,
    terminate,
    wait_until,
)
from runtime.errors import StackError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"


class LocalServer(ABC):
    """One server of the local stack, run as a detached child with its own data dir.

    Subclasses say how to find the binary, prepare the data dir, build the command line
    and probe health. ``start`` is idempotent: a healthy server we started is left alone.
    """

    name: str
    #: The signal that makes the server shut down cleanly.
    stop_signal: int = signal.SIGTERM
    start_timeout: float = 30.0

    def __init__(self, *, stack_dir: Path, port: int) -> None:
        self.stack_dir = stack_dir
        self.port = port
        self.data_dir = stack_dir / self.name
        self.log_path = self.data_dir / f"{self.name}.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pidfile(self) -> PidFile:
        return PidFile(self.stack_dir / f"{self.name}.pid", marker=str(self.binary()))

    @abstractmethod
    def binary(self) -> Path:
        """The server executable; raise :class:`StackError` with the fix if missing."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """A real client round trip (not just an open port)."""

    def prepare(self) -> None:
        """Create the data dir; subclasses add one-time initialisation."""
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def after_start(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Work that needs the running server (e.g. create the database)."""

    def start(self) -> ServerStatus:
        if self.pidfile.live_pid() is not None:
            if wait_until(self.is_healthy, timeout=self.start_timeout):
                return self.status()
            raise StackError(
                self.name, f"is running but not healthy; see {self.log_path} or `make down`"
            )
        self.binary()  # fail fast, with the fix, when the binary is missing
        if not port_is_free(HOST, self.port):
            raise StackError(
                self.name,
                f"port {self.port} is already in use by another process; stop it or choose "
                f"another port with {self.port_setting_hint()}",
            )
        self.prepare()
        process = spawn(self.command(), log_path=self.log_path, cwd=self.data_dir)
        self.pidfile.write(process.pid)
        logger.info("started %s (pid %d) on %s", self.name, process.pid, self.address)
        if not wait_until(
            lambda: process.poll() is None and self.is_healthy(), timeout=self.start_timeout
        ):
            code = process.poll()
            terminate(process.pid, timeout=5)
            self.pidfile.clear()
            why = f"exited with code {code}" if code is not None else "did not become healthy"
            raise StackError(
                self.name, f"{why} within {self.start_timeout:.0f}s; see {self.log_path}"
            )
        self.after_start()
        return self.status()

    def stop(self) -> bool:
        """Stop the server we started (by PID). Returns False if none was running."""
        pid = self.pidfile.live_pid()
        self.pidfile.clear()
        if pid is None:
            return False
        terminate(pid, sig=self.stop_signal)
        logger.info("stopped %s (pid %d)", self.name, pid)
        return True

    def status(self) -> ServerStatus:
        pid = self.pidfile.live_pid()
        recorded = self.pidfile.read()
        healthy = pid is not None and self._safe_healthy()
        if pid is None:
            detail = f"not running (pid {recorded} is gone)" if recorded else "not running"
        elif not healthy:
            detail = f"running but not answering; see {self.log_path}"
        else:
            detail = "ok"
        return ServerStatus(self.name, self.address, pid, pid is not None, healthy, detail)

    def port_setting_hint(self) -> str:
        return "the matching SIDESTREAM_* setting"

    def _safe_healthy(self) -> bool:
        try:
            return self.is_healthy()
        except Exception:
            return False
