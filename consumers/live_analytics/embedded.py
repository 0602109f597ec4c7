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
from runtime.lifecycle import ExitStatus

__all__ = ["EmbeddedLiveAnalytics"]

T = TypeVar("T")


class EmbeddedLiveAnalytics:
    """Runs `run_live_analytics` on a daemon thread with its own metrics registry."""

    def __init__(self, settings: Settings, options: LiveAnalyticsOptions) -> None:
        self.settings = settings
        self.options = options
        self.registry = CollectorRegistry()
        self.stop_event = threading.Event()
        self.status: ExitStatus | None = None
        self.error: BaseException | None = None
        self.live: LiveAnalyticsApp | None = None
        self._built = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"live-analytics-{options.app_id}", daemon=True
        )

    def _on_ready(self, live: LiveAnalyticsApp) -> None:
        self.live = live
        self._built.set()

    def _run(self) -> None:
        try:
            self.status = run_live_analytics(
                self.settings,
                self.options,
                stop=self.stop_event,
                registry=self.registry,
                install_signal_handlers=False,
                on_ready=self._on_ready,
            )
        except BaseException as exc:
            self.error = exc
        finally:
            self._built.set()

    def start(self) -> EmbeddedLiveAnalytics:
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the tables are restored and the agent runs; False on timeout or when
        the worker ended (`shutdown` re-raises its error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
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

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the worker's registry (0 when absent)."""
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def shutdown(self, timeout: float = 60) -> ExitStatus | None:
        """Stop the worker and wait for it; re-raises what killed it, if anything."""
        self.stop_event.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"live analytics worker still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.status
