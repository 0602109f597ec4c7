"""The lifecycle every local server shares: start once, wait until healthy, stop by PID."""

from __future__ import annotations

import logging
import signal
from abc import ABC, abstractmethod
from pathlib import Path

from devtools.localstack.process import (
    PidFile,
    ServerStatus,
    listening_inodes,
    listens_on,
    port_is_free,
    spawn,
    terminate,
    wait_until,
)
from runtime.errors import StackError
from runtime.ports import free_port

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

    #: Tries of a server started with ``port=0`` when its port is taken in the gap.
    port_attempts = 5

    def __init__(self, *, stack_dir: Path, port: int) -> None:
        """``port=0``: any free port, picked at the first :meth:`start` (retried with
        another one if it is taken before the server binds it) and kept from then on."""
        self.stack_dir = stack_dir
        self.port = port
        self._pick_port = port == 0
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
        pid = self.pidfile.live_pid()
        if pid is not None:
            if wait_until(lambda: self._serving(pid), timeout=self.start_timeout):
                return self.status()
            raise StackError(self.name, self._not_serving(pid))
        self.binary()  # fail fast, with the fix, when the binary is missing
        if not self._pick_port:
            return self._start_on(self.port)
        # These servers take their port on the command line (Kafka also advertises it),
        # so they cannot bind port 0 and report it: pick a free one, and pick again when
        # another process takes it before the server binds it.
        for attempt in range(1, self.port_attempts + 1):
            try:
                status = self._start_on(free_port(HOST))
            except StackError:
                if attempt == self.port_attempts or port_is_free(HOST, self.port):
                    raise
                logger.warning(
                    "%s: port %d was taken while starting; trying another", self.name, self.port
                )
                continue
            self._pick_port = False  # a restart keeps the port its clients know
            return status
        raise AssertionError("unreachable")

    def _start_on(self, port: int) -> ServerStatus:
        self.port = port
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
        # Stop waiting as soon as it exits (e.g. the port was taken after all); healthy
        # means this very process listens and answers, not just "something answers".
        wait_until(
            lambda: process.poll() is not None or self._serving(process.pid),
            timeout=self.start_timeout,
        )
        if process.poll() is not None or not self._serving(process.pid):
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
        """Healthy only when the recorded process is the one listening on our port and it
        answers a real client: another server on the same port (say, another stack's)
        answers too, but is not ours."""
        pid = self.pidfile.live_pid()
        recorded = self.pidfile.read()
        if pid is None:
            detail = f"not running (pid {recorded} is gone)" if recorded else "not running"
            return ServerStatus(self.name, self.address, None, False, False, detail)
        healthy = self._serving(pid)
        if healthy:
            detail = "ok"
        elif listens_on(pid, self.port) is False:
            detail = self._not_serving(pid)
        else:
            detail = f"running but not answering; see {self.log_path}"
        return ServerStatus(self.name, self.address, pid, True, healthy, detail)

    def _serving(self, pid: int) -> bool:
        """``pid`` holds the socket listening on our port, and the server answers.

        Where the process's sockets cannot be read (another user's process, without
        root), the answer alone decides.
        """
        return listens_on(pid, self.port) is not False and self._safe_healthy()

    def _not_serving(self, pid: int) -> str:
        if listens_on(pid, self.port) is False:
            other = (
                "another process listens there (another stack on the same ports?)"
                if listening_inodes(self.port)
                else "nothing listens there"
            )
            return (
                f"pid {pid} (ours) is running but does not listen on port {self.port}; "
                f"{other}: `make down`, or choose other ports with {self.port_setting_hint()}"
            )
        return f"is running but not healthy; see {self.log_path} or `make down`"

    def port_setting_hint(self) -> str:
        return "the matching SIDESTREAM_* setting"

    def _safe_healthy(self) -> bool:
        try:
            return self.is_healthy()
        except Exception:
            return False
