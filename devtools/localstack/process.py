"""Starting, finding and stopping one local server process by its PID file.

A server is started detached (its own session) so it outlives the CLI call that started
it; its PID is written to ``<stack_dir>/<name>.pid``. Stopping signals exactly that PID,
and only after checking that the process still runs the binary we started, so a PID
reused by an unrelated process is never killed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import StackError


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """What ``sidestream dev status`` prints for one server."""

    name: str
    address: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str = ""


def process_cmdline(pid: int) -> str | None:
    """The command line of ``pid``, or ``None`` if no such process (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    if state == "Z":
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets (IPv4 and IPv6) listening on ``port``, on any address
    (read from ``/proc/net/tcp*``; empty where that is unavailable)."""
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(fields[9]))
    return found


def socket_inodes(pid: int) -> set[int] | None:
    """Inodes of the sockets ``pid`` holds open, or ``None`` if they cannot be read (no
    such process, or another user's process when we are not root)."""
    found: set[int] = set()
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` itself holds a socket listening on ``port``: ``None`` when
    its sockets cannot be read. Telling *our* server from another that answers on the
    same port takes this, not a connection (which anything listening would accept)."""
    held = socket_inodes(pid)
    if held is None:
        return None
    return bool(held & listening_inodes(port))


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class PidFile:
    """The PID of a server we started, and the marker that identifies its process."""

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker  # a substring of the command line, e.g. the binary's path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{pid}\n")

    def read(self) -> int | None:
        try:
            return int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def live_pid(self) -> int | None:
        """The recorded PID if that process is alive and still ours, else ``None``."""
        pid = self.read()
        if pid is None:
            return None
        cmdline = process_cmdline(pid)
        if cmdline is None or self.marker not in cmdline:
            return None
        return pid

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` detached, with stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise StackError(Path(command[0]).name, f"cannot run {command[0]}: {exc}") from exc


def terminate(pid: int, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> bool:
    """Signal ``pid`` and wait for it to exit; SIGKILL after ``timeout``. True if it exited."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if wait_until(lambda: process_cmdline(pid) is None, timeout=timeout):
        _reap(pid)
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    exited = wait_until(lambda: process_cmdline(pid) is None, timeout=5)
    _reap(pid)
    return exited


def _reap(pid: int) -> None:
    # A server we started in this very process is our child: collect it so it does not
    # linger as a zombie. For servers started by an earlier CLI call this is a no-op.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
