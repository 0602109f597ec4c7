"""Workers as real child processes (``python -m sidestream worker run NAME``), and a group
of them kept at a fixed size while the scenarios kill or stop its members.

The child's configuration comes from a :class:`runtime.Settings` (turned back into
``SIDESTREAM_*`` variables), so a scenario points its workers at a private stack, or at a
proxy in front of it, by passing other settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from devtools.chaos.errors import ChaosError
from runtime import Settings
from runtime.environment import SERVERS, settings_environment
from runtime.ports import ReadyFile

__all__ = ["WorkerGroup", "WorkerProcess", "worker_environment"]

logger = logging.getLogger(__name__)

#: How long a SIGKILLed process may take to disappear.
_KILL_WAIT_S = 10.0


def worker_environment(settings: Settings) -> dict[str, str]:
    """The ``SIDESTREAM_*`` variables that make a child process use ``settings``' servers
    and batch, retry and shutdown settings (the rest of our environment is inherited)."""
    env = settings_environment(
        settings,
        "profile",
        *SERVERS,
        # Local workers announce their /metrics in the stack dir: the private one's.
        "stack_dir",
        "consumer_batch_max_records",
        "consumer_batch_max_wait_ms",
        "consumer_retry_deadline_s",
        "consumer_shutdown_deadline_s",
        "log_level",
        "kafka_session_timeout_ms",  # left out when None
        *(("kafka_extra",) if settings.kafka_extra else ()),
    )
    env["SIDESTREAM_LOG_FORMAT"] = "json"
    # SIGABRT (see WorkerProcess.dump_stacks) then writes every thread's stack to the log.
    env["PYTHONFAULTHANDLER"] = "1"
    return env


class WorkerProcess:
    """One worker child process.

    Args:
        settings: the servers and worker settings it uses.
        worker: ``audit``, ``analytics``, ``notifications`` or ``outbox-relay``.
        log: its stdout and stderr are appended here.
        group / topics / schema: the ``worker run`` options.

    Each worker serves ``/healthz`` on a port of its own, bound as port 0 and reported
    in a ready file next to its log (:mod:`runtime.ports`): :meth:`wait_ready` reads
    the port there and asks ``/healthz`` to know the worker is past its start-up.
    """

    def __init__(
        self,
        settings: Settings,
        worker: str,
        *,
        log: Path,
        group: str | None = None,
        topics: Sequence[str] = (),
        schema: str | None = None,
    ) -> None:
        self.worker = worker
        self.log = log
        self._command = [sys.executable, "-m", "sidestream", "worker", "run", worker]
        if group:
            self._command += ["--group", group]
        for topic in topics:
            self._command += ["--topic", topic]
        if schema:
            self._command += ["--schema", schema]
        self._ready = ReadyFile(log.parent, log.stem)
        self._env = {
            **os.environ,
            **worker_environment(settings),
            "SIDESTREAM_METRICS_PORT": "0",
            **self._ready.env(),
        }
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._ready.path.unlink(missing_ok=True)  # the report of an earlier start
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self._command,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        logger.debug("started %s worker (pid %d)", self.worker, self._process.pid)
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self.worker} worker not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the worker answers ``/healthz``; ``False`` if it exited or did not
        answer within ``timeout_s``.

        A worker still importing has no SIGTERM handler yet: a SIGTERM then kills it
        outright (exit -15) instead of asking it to drain. Scenarios that judge drains
        wait for this first.
        """
        deadline = time.monotonic() + timeout_s
        while self.alive:
            address = self._ready.read(self.pid).get("metrics")
            if address is None:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)
                continue
            url = f"http://{address}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return False

    def kill(self) -> int | None:
        """SIGKILL it and wait until it is gone; its exit code (``-9``)."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        try:
            return self.process.wait(timeout=_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout_s: float) -> int | None:
        """SIGTERM it and wait up to ``timeout_s`` for it to drain; its exit code, or
        ``None`` if it did not exit in time (it is then SIGKILLed)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout_s)

    def wait_exit(self, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for it to exit; its exit code, or ``None`` if it did
        not exit in time (it is then SIGKILLed)."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning(
                "%s worker %d did not exit within %.0fs", self.worker, self.pid, timeout_s
            )
            self.kill()
            return None

    def dump_stacks(self) -> None:
        """Abort a stuck worker so that it writes the stack of every thread to its log
        (Python's faulthandler, enabled in its environment). It exits."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=_KILL_WAIT_S)
        self.close()

    def close(self) -> None:
        """SIGKILL it if it still runs (the last resort of a cleanup)."""
        if self.alive:
            self.kill()

    def tail(self, lines: int = 20) -> str:
        """The end of its log."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class WorkerGroup:
    """``size`` worker processes kept at that size: when one is killed or stopped, a new
    one (from ``spawn``) takes its place at once.

    Args:
        spawn: builds the n-th worker (not started); n counts every worker ever spawned.
        size: how many run at a time.
    """

    def __init__(self, spawn: Callable[[int], WorkerProcess], size: int) -> None:
        if size < 1:
            raise ValueError("a worker group needs at least one worker")
        self._spawn = spawn
        self._size = size
        self.members: list[WorkerProcess] = []
        self.spawned = 0
        self.exit_codes: list[int | None] = []
        """Exit codes of members stopped with :meth:`drain` or :meth:`stop`."""
        self.stopped = False

    def _new(self) -> WorkerProcess:
        worker = self._spawn(self.spawned).start()
        self.spawned += 1
        return worker

    def start(self) -> WorkerGroup:
        while len(self.members) < self._size:
            self.members.append(self._new())
        return self

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and start its replacement."""
        self.members[index].kill()
        self.members[index] = self._new()

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until every member answers ``/healthz`` (bounded by ``timeout_s`` in all)."""
        deadline = time.monotonic() + timeout_s
        return all(w.wait_ready(max(0.0, deadline - time.monotonic())) for w in self.members)

    def drain(self, index: int, timeout_s: float) -> int | None:
        """SIGTERM member ``index`` once it is ready, wait for its exit (its code is
        returned and kept in :attr:`exit_codes`), and start its replacement."""
        self.members[index].wait_ready(timeout_s)
        code = self.members[index].terminate(timeout_s)
        self.exit_codes.append(code)
        self.members[index] = self._new()
        return code

    def stop(self, timeout_s: float) -> list[int | None]:
        """SIGTERM every member at once (once all are ready) and wait for each; their
        exit codes."""
        self.stopped = True
        self.wait_ready(timeout_s)
        for worker in self.members:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        codes = [worker.wait_exit(timeout_s) for worker in self.members]
        self.exit_codes += codes
        return codes

    def check(self) -> None:
        """Raise if a member exited on its own (members killed or stopped through this
        group are replaced at once, so any other exit is a crash).

        Raises:
            ChaosError: naming the worker, its exit code and the end of its log.
        """
        if self.stopped:
            return
        for worker in self.members:
            code = worker.process.poll()
            if code is not None:
                last = worker.tail(1)[-300:]
                raise ChaosError(
                    f"{worker.worker} worker {worker.pid} exited by itself with code {code} "
                    f"(log {worker.log}): {last}"
                )

    def close(self) -> None:
        """SIGKILL whatever still runs."""
        for worker in self.members:
            worker.close()
