"""A private stack per scenario: Kafka (tansu), Postgres and Redis on free ports, in a
scratch directory, with the faults the scenarios inject into them.

The shared stack (``make up``) is never touched: a scenario that kills Postgres or
freezes the broker does it to servers of its own, started with the project's launcher
(``devtools.localstack``) and stopped — with their data — when the scenario ends.

Faults:

- :meth:`PrivateStack.freeze_kafka` — SIGSTOP / SIGCONT (the broker keeps its data in
  memory, so it is frozen, never killed);
- :meth:`PrivateStack.crash_postgres` — SIGKILL of the postmaster and every backend at
  once (no shutdown checkpoint: the next start runs crash recovery);
- :meth:`PrivateStack.stop_redis` / :meth:`~PrivateStack.start_redis`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported

from devtools.chaos.errors import ChaosError
from devtools.localstack.kafka import KafkaServer
from devtools.localstack.postgres import PostgresServer
from devtools.localstack.process import process_cmdline, wait_until
from devtools.localstack.redis import RedisServer
from devtools.localstack.server import HOST, LocalServer
from runtime import Settings
from runtime.clients import kafka_admin

__all__ = ["PrivateStack"]

logger = logging.getLogger(__name__)

DATABASE = "chaos"


class _AdvertisedKafkaServer(KafkaServer):
    """A tansu broker that advertises another port than it listens on: clients that
    bootstrap through a proxy on ``advertised_port`` keep going through it."""

    def __init__(
        self, *, stack_dir: Path, port: int, advertised_port: int, binary: Path | None
    ) -> None:
        super().__init__(stack_dir=stack_dir, port=port, binary=binary)
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        command = super().command()
        flag = command.index("--advertised-listener-url")
        command[flag + 1] = f"tcp://{HOST}:{self.advertised_port}"
        return command


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


class PrivateStack:
    """Kafka, Postgres and Redis of one scenario's own.

    Args:
        base: settings to start from (binaries, profile, batch sizes); the connection
            settings are replaced by the private servers' (see :attr:`settings`).
        name: prefix of the scratch directory.
        root: where the scratch directory is made (default: the system temp dir).
        kafka_advertised_port: make the broker advertise this port (a proxy's) instead
            of its own, so every Kafka client goes through that proxy.
        keep: leave the scratch directory (logs, data) behind after :meth:`close`.

    Use as a context manager: the servers start on enter and stop on exit.
    """

    def __init__(
        self,
        base: Settings,
        *,
        name: str,
        root: Path | None = None,
        kafka_advertised_port: int | None = None,
        keep: bool = False,
    ) -> None:
        self.keep = keep
        root = root or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        self.directory = Path(tempfile.mkdtemp(prefix=f"sidestream-chaos-{name}-", dir=root))
        # Postgres runs as `nobody` when we are root: it must be able to enter the data
        # dir's parents. This directory is ours (just made), so opening it is harmless.
        self.directory.chmod(0o755)
        # Port 0: each server gets a free port when it starts (and another one if that
        # is taken in the gap); :attr:`settings` follows them.
        self.kafka: KafkaServer = (
            _AdvertisedKafkaServer(
                stack_dir=self.directory,
                port=0,
                advertised_port=kafka_advertised_port,
                binary=base.tansu_binary,
            )
            if kafka_advertised_port is not None
            else KafkaServer(stack_dir=self.directory, port=0, binary=base.tansu_binary)
        )
        self.postgres = PostgresServer(
            stack_dir=self.directory, port=0, database=DATABASE, bindir=base.postgres_bindir
        )
        self.redis = RedisServer(stack_dir=self.directory, port=0, binary=base.redis_server)
        self._base = base
        self._advertised_port = kafka_advertised_port
        self._settings: Settings | None = None
        self._frozen = False

    @property
    def settings(self) -> Settings:
        """The base settings pointed at the private servers (known once started)."""
        if self._settings is None:
            raise RuntimeError("the private stack is not started: its ports are not known")
        return self._settings

    def postgres_dsn(self, port: int | None = None) -> str:
        """The DSN of the private database (through ``port`` if given, e.g. a proxy)."""
        return f"postgresql://postgres@{HOST}:{port or self.postgres.port}/{DATABASE}"

    @property
    def servers(self) -> tuple[LocalServer, ...]:
        return (self.kafka, self.postgres, self.redis)

    # --- lifecycle --------------------------------------------------------------------
    def start(self) -> PrivateStack:
        """Start the three servers and wait until each answers a real client."""
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.close()
            raise
        self._settings = self._base.with_overrides(
            stack_dir=self.directory,
            kafka_bootstrap_servers=f"{HOST}:{self._advertised_port or self.kafka.port}",
            postgres_dsn=self.postgres_dsn(),
            redis_url=f"redis://{HOST}:{self.redis.port}/0",
        )
        logger.info(
            "private stack in %s: kafka %s, postgres %s, redis %s",
            self.directory,
            self.settings.kafka_bootstrap_servers,
            self.postgres.address,
            self.redis.address,
        )
        return self

    def close(self) -> None:
        """Stop every server (thawing the broker first) and remove the scratch dir."""
        self.thaw_kafka()
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:
                logger.exception("could not stop the private %s", server.name)
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- Kafka --------------------------------------------------------------------------
    def create_topics(self, *topics: tuple[str, int]) -> None:
        """Create ``(name, partitions)`` topics on the private broker."""
        admin = kafka_admin(self.settings)
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=count, replication_factor=1) for name, count in topics]
        )
        for future in futures.values():
            future.result(timeout=15)

    def _kafka_pid(self) -> int:
        pid = self.kafka.pidfile.live_pid()
        if pid is None:
            raise ChaosError("the private broker is not running")
        return pid

    def freeze_kafka(self) -> None:
        """SIGSTOP the broker: connections stay open, nothing answers."""
        os.kill(self._kafka_pid(), signal.SIGSTOP)
        self._frozen = True
        logger.info("froze the private broker")

    def thaw_kafka(self) -> None:
        """SIGCONT the broker (harmless when it is not frozen)."""
        if not self._frozen:
            return
        pid = self.kafka.pidfile.live_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = False
        logger.info("thawed the private broker")

    @contextlib.contextmanager
    def kafka_frozen(self) -> Iterator[None]:
        """The broker is frozen inside the block; it always thaws after it."""
        self.freeze_kafka()
        try:
            yield
        finally:
            self.thaw_kafka()

    # --- Postgres -----------------------------------------------------------------------
    def crash_postgres(self, timeout_s: float = 15.0) -> None:
        """SIGKILL the postmaster and its backends at once, and wait until all are gone.

        Backends put themselves in their own process groups, so a group kill would miss
        them; they are found as the postmaster's children instead, before it dies.
        """
        pid = self.postgres.pidfile.live_pid()
        if pid is None:
            raise ChaosError("the private Postgres is not running")
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        if not wait_until(
            lambda: all(process_cmdline(v) is None for v in victims), timeout=timeout_s
        ):
            raise ChaosError(f"Postgres processes {victims} outlived SIGKILL by {timeout_s}s")
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # the postmaster is our child: no zombie
        logger.info("SIGKILLed the private Postgres (%d processes)", len(victims))

    def start_postgres(self, timeout_s: float = 60.0) -> float:
        """(Re)start Postgres after a crash; returns the seconds it took (recovery
        included). Retries while the dead server's resources are being released."""
        started = time.monotonic()
        deadline = started + timeout_s
        while True:
            try:
                self.postgres.start()
                return time.monotonic() - started
            except Exception:
                if time.monotonic() > deadline:
                    raise
                logger.warning("Postgres did not restart yet; retrying", exc_info=True)
                time.sleep(0.5)

    # --- Redis --------------------------------------------------------------------------
    def stop_redis(self) -> None:
        """Stop Redis (its data is gone: it keeps nothing on disk)."""
        self.redis.stop()

    def start_redis(self) -> None:
        self.redis.start()
