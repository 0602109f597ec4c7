"""Ports without races: a child binds port 0 and reports it in a ready file; the parent
reads it (or learns, in one line, why the child never reported)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.ports import ReadyFile, free_port, refused_port

_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from runtime import ObservabilityServer, new_registry
    from runtime.ports import announce_ready

    announce_ready(Path(sys.argv[1]))
    with ObservabilityServer(port=0, registry=new_registry()):
        sys.stdin.read()  # serve until the parent closes our stdin
    """
)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], ReadyFile]]:
    ready = ReadyFile(tmp_path, "child")
    process = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(ready.path)], stdin=subprocess.PIPE
    )
    yield process, ready
    if process.stdin is not None:
        process.stdin.close()
    process.wait(30)


def test_a_child_reports_the_port_it_bound_and_serves_there(
    child: tuple[subprocess.Popen[bytes], ReadyFile],
) -> None:
    process, ready = child
    address = ready.wait(process, "metrics", timeout=60)
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    with urllib.request.urlopen(f"http://{address}/healthz", timeout=5) as response:
        assert response.status == 200
    assert ready.read(process.pid) == {"metrics": address}
    assert ready.read(process.pid + 1) == {}  # another process's report is not this one's


def test_a_child_that_exits_first_is_one_readable_error(tmp_path: Path) -> None:
    ready = ReadyFile(tmp_path, "doomed")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match=r"exited with code 3 before it reported its port"):
        ready.wait(process, "metrics", timeout=60, log=tmp_path / "doomed.log")


def test_a_child_that_never_reports_times_out(tmp_path: Path) -> None:
    ready = ReadyFile(tmp_path, "silent")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(TimeoutError, match=r"did not report its port within 1s"):
            ready.wait(process, "metrics", timeout=1)
    finally:
        process.kill()
        process.wait()


def test_a_fresh_ready_file_forgets_an_earlier_report(tmp_path: Path) -> None:
    stale = tmp_path / "w.ready.json"
    stale.write_text('{"pid": 1, "addresses": {"metrics": "127.0.0.1:1"}}')
    ready = ReadyFile(tmp_path, "w")
    assert ready.path == stale
    assert not stale.exists()
    assert ready.env() == {"SIDESTREAM_READY_FILE": str(stale)}


def test_refused_port_refuses_and_cannot_be_taken_meanwhile() -> None:
    with refused_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use"):
            other.bind(("127.0.0.1", port))


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
