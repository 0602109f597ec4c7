"""A sink worker inside the current process, on a thread: for tests, benchmarks and demos.

Production runs workers as processes (``sidestream worker run``); the loop is the same.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from consumers.runtime import BatchConfig
from consumers.sink import Sink
from consumers.worker import WorkerOptions, run_worker
from runtime import Settings
from runtime.lifecycle import ExitStatus


class EmbeddedWorker:
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
        self.registry = CollectorRegistry()
        self.stop_event = threading.Event()
        self.status: ExitStatus | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"worker-{options.sink}", daemon=True
        )

    def _run(self) -> None:
        try:
            self.status = run_worker(
                self.settings,
                self.options,
                stop=self.stop_event,
                registry=self.registry,
                install_signal_handlers=False,
                sink=self.sink,
                config=self.config,
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> EmbeddedWorker:
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 60) -> ExitStatus | None:
        """Ask the worker to drain and wait for it; re-raises what killed it, if anything."""
        self.stop_event.set()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.status

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the worker's own registry (0 if absent)."""
        return self.registry.get_sample_value(name, labels) or 0.0
