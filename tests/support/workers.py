"""Worker harnesses: the type of the ``worker_threads`` fixture (sink workers on threads
of the test process, stopped after the test; see ``tests/consumers/conftest.py``).

Workers on a thread are :class:`runtime.lifecycle.WorkerThread` (``EmbeddedWorker``,
``EmbeddedLiveAnalytics``, the delivery tests' ``WorkerThread``); workers as real child
processes are started by each package's ``support.worker_process``.
"""

from __future__ import annotations

from collections.abc import Callable

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from runtime import Settings

#: ``start(settings, options)``: a sink worker on a thread, already started.
StartWorker = Callable[[Settings, WorkerOptions], EmbeddedWorker]
