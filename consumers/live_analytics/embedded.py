"""The live analytics worker on a thread of this process: for tests, benchmarks and demos.

Production runs it as a process (``sidestream worker run live-analytics``); the code path is
the same `run_live_analytics`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry

from consumers.live_analytics.app import LiveAnalyticsApp
from consumers.live_analytics.options import LiveAnalyticsOptions
from consumers.live_analytics.worker import run_live_analytics
from runtime import Settings
from runtime.lifecycle import ExitStatus, WorkerThread

__all__ = ["EmbeddedLiveAnalytics"]

T = TypeVar("T")


class EmbeddedLiveAnalytics(WorkerThread):
    """Runs `run_live_analytics` on a daemon thread with its own metrics registry."""

    def __init__(self, settings: Settings, options: LiveAnalyticsOptions) -> None:
        self.settings = settings
        self.options = options
        self.live: LiveAnalyticsApp | None = None
        self._built = threading.Event()
        super().__init__(self._run_live, name=f"live-analytics-{options.app_id}")

    def _on_ready(self, live: LiveAnalyticsApp) -> None:
        self.live = live
        self._built.set()

    def _run_live(self, stop: threading.Event, registry: CollectorRegistry) -> ExitStatus:
        return run_live_analytics(
            self.settings,
            self.options,
            stop=stop,
            registry=registry,
            install_signal_handlers=False,
            on_ready=self._on_ready,
        )

    def _ended(self) -> None:
        self._built.set()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the tables are restored and the agent runs; False on timeout or when
        the worker ended (`shutdown` re-raises its error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running:
            live = self.live
            if live is not None and live.recovered.wait(0.1):
                return True
            time.sleep(0.05)
        return self.live is not None and self.live.recovered.is_set()

    def call(self, fun: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fun` on the worker's event loop (where the tables live) and return its result."""
        live = self.live
        if live is None:
            raise RuntimeError("the worker is not running")

        async def run() -> T:
            return fun()

        return asyncio.run_coroutine_threadsafe(run(), live.loop).result(timeout)

    def shutdown(self, timeout: float = 60) -> ExitStatus | None:
        """Stop the worker and wait for it; re-raises what killed it, if anything."""
        status = super().shutdown(timeout)
        if self.running:
            raise TimeoutError(f"live analytics worker still running after {timeout} s")
        return status
