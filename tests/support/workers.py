"""Worker harnesses: the type of the ``worker_threads`` fixture (sink workers on threads
of the test process, stopped after the test; see ``tests/consumers/conftest.py``).

Workers on a thread are :class:`runtime.lifecycle.WorkerThread` (``EmbeddedWorker``,
``EmbeddedLiveAnalytics``, the delivery tests' ``WorkerThread``); workers as real child
processes are started by each package's ``support.worker_process``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from runtime import Settings
from runtime.lifecycle import WorkerThread

#: ``start(settings, options)``: a sink worker on a thread, already started.
StartWorker = Callable[[Settings, WorkerOptions], EmbeddedWorker]

W = TypeVar("W", bound=WorkerThread)


class StartedWorkers(Generic[W]):
    """The workers one test started on threads, stopped together after it: every stop event
    is set first, so they drain in parallel, then each is shut down (re-raising what killed
    it unless ``tolerate_errors``)."""

    def __init__(self) -> None:
        self.workers: list[W] = []

    def __len__(self) -> int:
        return len(self.workers)

    def add(self, worker: W) -> W:
        self.workers.append(worker)
        return worker

    def stop_all(self, *, timeout: float = 60, tolerate_errors: bool = False) -> None:
        for worker in self.workers:
            worker.stop_event.set()
        for worker in self.workers:
            with contextlib.suppress(Exception) if tolerate_errors else contextlib.nullcontext():
                worker.shutdown(timeout)
