"""The processes the demo starts (the API and every worker), and stopping exactly those.

Every process binds port 0 and reports the port it got in a ready file
(:mod:`runtime.ports`); a process that does not come up has its log tail printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from runtime import Settings
from runtime.errors import SidestreamError
from runtime.ports import ReadyFile
from runtime.terminal import console


class DemoError(SidestreamError):
    """A process the demo started did not come up or died; its log tail was printed."""


#: How long a process the demo starts may take to bind its port (imports on a busy machine).
_START_TIMEOUT_S = 60


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready: ReadyFile
    metrics_url: str = ""
    url: str = ""


def _report_early_exit(worker: Worker, why: str = "") -> None:
    console.print(
        f"[red]{worker.name} did not come up{f' ({why})' if why else ''}; last log lines:[/]"
    )
    console.print(worker.log.read_text()[-2000:])


@dataclass
class DemoRun:
    """Everything the demo started, so it can stop exactly that.

    Every process binds port 0 and reports the port it got in a ready file
    (:mod:`runtime.ports`): no port is picked free first, so none can be taken meanwhile.
    """

    config: Settings
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> Worker:
        log = self.log_dir / f"{name}.log"
        ready = ReadyFile(self.log_dir, name)
        env = {**os.environ, "SIDESTREAM_LOG_FORMAT": "json", **ready.env(), **extra_env}
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sidestream", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name, process, log, ready)
        self.workers.append(worker)
        return worker

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> Worker:
        """Start a worker; :meth:`wait_started` gives it its metrics URL."""
        return self._spawn(
            name,
            ["worker", "run", name],
            {"SIDESTREAM_METRICS_PORT": "0", **(extra_env or {})},
        )

    def wait_started(self) -> None:
        """Wait until every process started so far reported its port (in parallel: they
        start together); exits 1 with the log of the first that did not."""
        for worker in self.workers:
            if worker.metrics_url:
                continue
            try:
                key = "api" if worker.name == "api" else "metrics"
                address = worker.ready.wait(
                    worker.process, key, timeout=_START_TIMEOUT_S, log=worker.log
                )
            except (RuntimeError, TimeoutError) as exc:
                _report_early_exit(worker, str(exc))
                raise DemoError(f"{worker.name} did not come up: {exc}") from None
            if worker.name == "api":
                worker.url = f"http://{address}"
                worker.metrics_url = f"{worker.url}/metrics"
            else:
                worker.metrics_url = f"http://{address}/metrics"

    def start_api(self, extra_env: dict[str, str] | None = None) -> Worker:
        """The reference API as a process; waits until it answers /readyz."""
        api = self._spawn("api", ["api", "--port", "0"], dict(extra_env or {}))
        self.wait_started()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline and api.process.poll() is None:
            try:
                if httpx.get(f"{api.url}/readyz", timeout=1).status_code == 200:
                    return api
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        _report_early_exit(api, "not ready")
        raise DemoError(f"{api.name} did not become ready")

    def stop_workers(self) -> dict[str, int | None]:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        codes: dict[str, int | None] = {}
        for worker in self.workers:
            try:
                codes[worker.name] = worker.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes[worker.name] = None
        return codes


def _check_workers_alive(demo: DemoRun) -> None:
    dead = [w for w in demo.workers if w.process.poll() is not None]
    for worker in dead:
        _report_early_exit(worker)
    if dead:
        raise DemoError(f"{', '.join(w.name for w in dead)} exited early")
