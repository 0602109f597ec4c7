"""The local stack: Kafka (tansu), Postgres and Redis, started and stopped together."""

from __future__ import annotations

import logging
from pathlib import Path

from devtools.localstack.incarnation import forget_offsets_of_previous_broker
from devtools.localstack.kafka import KafkaServer
from devtools.localstack.postgres import PostgresServer
from devtools.localstack.process import ServerStatus
from devtools.localstack.redis import RedisServer
from devtools.localstack.server import LocalServer
from runtime.clients import kafka_admin
from runtime.settings import Settings

logger = logging.getLogger(__name__)


class LocalStack:
    """The three servers a developer (or a test session) needs, as child processes.

    ``up`` is idempotent and waits until every server answers a real client; ``down``
    stops only the processes ``up`` started (by PID) and deletes nothing.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        stack_dir = Path(settings.stack_dir).resolve()
        self.servers: list[LocalServer] = [
            KafkaServer(
                stack_dir=stack_dir, port=settings.kafka_port, binary=settings.tansu_binary
            ),
            PostgresServer(
                stack_dir=stack_dir,
                port=settings.postgres_port,
                database=settings.postgres_database,
                bindir=settings.postgres_bindir,
            ),
            RedisServer(
                stack_dir=stack_dir, port=settings.redis_port, binary=settings.redis_server
            ),
        ]
        self.forgotten_offsets: list[str] = []  # what the last ``up`` forgot (see incarnation)

    def server(self, name: str) -> LocalServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def up(self) -> list[ServerStatus]:
        """Start what is not running; stop what this call started if one server fails."""
        started: list[LocalServer] = []
        statuses = []
        try:
            for server in self.servers:
                was_running = server.pidfile.live_pid() is not None
                statuses.append(server.start())
                if not was_running:
                    started.append(server)
            # A fresh in-memory broker: offsets stored for the old one's log are forgotten.
            self.forgotten_offsets = forget_offsets_of_previous_broker(
                self._settings, kafka_admin(self._settings)
            )
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
        return statuses

    def down(self) -> list[tuple[str, bool]]:
        """Stop every server we started; returns (name, was_running) pairs."""
        return [(server.name, server.stop()) for server in reversed(self.servers)]

    def status(self) -> list[ServerStatus]:
        return [server.status() for server in self.servers]

    def is_up(self) -> bool:
        return all(status.healthy for status in self.status())
