"""SIGTERM and SIGINT set the stop event, and nothing else happens to the process."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from runtime.lifecycle import ExitStatus, stop_on_signals


@pytest.fixture
def restored_handlers() -> Iterator[None]:
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restored_handlers")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_stop_event(
    sig: signal.Signals, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    stop_on_signals(stop)
    assert not stop.is_set()
    caplog.set_level("INFO", logger="runtime.lifecycle")
    os.kill(os.getpid(), sig)
    assert stop.wait(5)
    assert f"received {sig.name}: draining" in caplog.text


def test_the_exit_status_is_the_process_exit_code() -> None:
    assert int(ExitStatus.DRAINED) == 0
    assert int(ExitStatus.ABANDONED) == 1
