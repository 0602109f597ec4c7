"""A sink worker inside the current process, on a thread: for tests, benchmarks and demos.

Production runs workers as processes (``sidestream worker run``); the loop is the same.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from consumers.runtime import BatchConfig, BatchRuntime
from consumers.sink import Sink
from consumers.worker import WorkerOptions, run_worker
from runtime import Settings
from runtime.lifecycle import ExitStatus, WorkerThread


class EmbeddedWorker(WorkerThread):
    """Runs :func:`run_worker` on a daemon thread with its own metrics registry.

    ``config`` defaults to :meth:`BatchConfig.from_settings` of ``settings``.
    """

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        *,
        sink: Sink | None = None,
        config: BatchConfig | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.sink = sink
        self.config = config
        self.runtime: BatchRuntime | None = None
        super().__init__(self._run_sink, name=f"worker-{options.sink}")

    def _run_sink(self, stop: threading.Event, registry: CollectorRegistry) -> ExitStatus:
        return run_worker(
            self.settings,
            self.options,
            stop=stop,
            registry=registry,
            install_signal_handlers=False,
            sink=self.sink,
            config=self.config,
            on_runtime=self._set_runtime,
        )

    def _set_runtime(self, runtime: BatchRuntime) -> None:
        self.runtime = runtime

    def ready(self) -> bool:
        """What the worker's ``/readyz`` answers (False before it runs)."""
        return self.runtime is not None and self.runtime.ready()

    @property
    def alive(self) -> bool:
        return self.running
