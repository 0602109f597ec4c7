"""What the console's pages read from and act on: Postgres, the broker, the workers.

One :class:`ConsoleResources` per app, built at start and closed at shutdown. Pages run
on FastAPI's worker threads: each request opens its own short autocommit Postgres
connection (the operations' transactions are their own, as in the CLI), and broker
reads share one :class:`~consumers.ops.TopicReader` under a lock (a consumer is not
thread-safe; an operator console has few concurrent readers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg

from consumers.ops import GroupInspector, TopicReader, ledger_version, redriven_positions
from consumers.ops.positions import has_table
from runtime import Settings
from runtime.clients import kafka_producer, postgres_connect
from services.console.audit import AuditTrail
from services.console.dead_letters import DeadLetterIndex, dlq_topics
from services.console.foreground import Foreground
from services.console.metrics import MetricsScraper
from services.console.pipelines import Pipeline

__all__ = ["ConsoleConfig", "ConsoleResources"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """What the console shows and where it finds it.

    Args:
        pipelines: the workers to show (from the worker registry; tests pass their own).
        schema: Postgres schema of the platform's tables (default: the configured one).
        targets_dir: where local workers announce their ``/metrics`` address
            (``<stack>/prometheus/targets``); None: no per-worker metrics.
        bench_dir: ``make bench`` results (``bench/results/*.json``) for the charts.
        alerts_topic: the live-analytics alert topic (None: no alerts panel).
        max_redrives: the redrive cap, as ``sidestream dlq redrive --max-redrives``.
        page_size: rows per listing (dead letters, notifications, ledger).
        dlq_poll_interval_s: how often the dead-letter index checks each ``.dlq`` topic
            for new letters (a page's view also asks for a check at once).
        dlq_fresh_wait_s: how long a dead-letter page may wait for that check before
            rendering what is indexed (never for a long read); 0: never waits, the page
            says when the topic's end was last checked.
        operator_tenants: when set, only keys of these tenants may sign in (an API key
            belongs to one tenant: a customer's admin key must not open the platform's
            console); None: any tenant's (the local keys are not tenant-bound).
    """

    pipelines: tuple[Pipeline, ...]
    schema: str | None = None
    targets_dir: Path | None = None
    bench_dir: Path | None = None
    alerts_topic: str | None = None
    max_redrives: int = 3
    page_size: int = 50
    operator_tenants: frozenset[str] | None = None
    dlq_poll_interval_s: float = 1.0
    dlq_fresh_wait_s: float = 0.0

    def pipeline(self, name: str) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        raise KeyError(name)


class ConsoleResources:
    """Clients shared by every page; :meth:`start` the background work (the dead-letter
    index), :meth:`close` them at shutdown.

    Args:
        open_reader: builds a topic reader (default: from ``settings``); each ``.dlq``
            topic's index thread opens its own.
    """

    def __init__(
        self,
        settings: Settings,
        config: ConsoleConfig,
        audit: AuditTrail,
        *,
        open_reader: Callable[[], TopicReader] | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.schema = config.schema or settings.postgres_schema
        self.audit = audit
        self.groups = GroupInspector.from_settings(settings)
        self.scraper = MetricsScraper(config.targets_dir)
        self.foreground = Foreground()  # requests in flight: background work steps aside
        self.dead_letters = DeadLetterIndex(
            (topic for _, topic in dlq_topics(config.pipelines)),
            open_reader=open_reader or (lambda: TopicReader.from_settings(settings)),
            max_redrives=config.max_redrives,
            foreground=self.foreground,
            poll_interval_s=config.dlq_poll_interval_s,
            fresh_wait_s=config.dlq_fresh_wait_s,
        )
        self._reader: TopicReader | None = None
        self._reader_lock = threading.Lock()
        self._cache: dict[str, tuple[float, object, object]] = {}
        self._cache_lock = threading.Lock()

    def cached(
        self, key: str, ttl_s: float, compute: Callable[[], T], *, version: object = None
    ) -> T:
        """``compute()``, remembered under ``key`` for ``ttl_s`` seconds while ``version``
        stays the same (for figures that are costly to read: the versions seen on a topic,
        a dead-letter summary until its topic or ledger changes). One entry per key."""
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl_s and hit[1] == version:
            return cast(T, hit[2])
        value = compute()
        with self._cache_lock:
            self._cache[key] = (now, version, value)
        return value

    def redriven(self, conn: psycopg.Connection[Any], dlq_topic: str) -> dict[tuple[int, int], int]:
        """The redrive ledger's positions of ``dlq_topic`` (→ recorded record timestamp),
        read again only when a redrive was recorded (none without a ledger table)."""
        return self.cached(
            f"dlq-ledger:{dlq_topic}",
            300.0,
            lambda: (
                redriven_positions(conn, self.schema, dlq_topic)
                if has_table(conn, self.schema, "dlq_redrives")
                else {}
            ),
            version=ledger_version(conn, self.schema, dlq_topic),
        )

    def prefetch_ledgers(self) -> None:
        """Read each ``.dlq`` topic's ledger positions once at start-up, so that no first
        view pays for it (10k redrives: ~20 ms idle, several times that on a busy
        machine). Best effort: a failure is logged and the page reads the ledger itself."""
        for _pipeline, dlq in dlq_topics(self.config.pipelines):
            try:
                with self.conn() as conn:
                    self.redriven(conn, dlq)
            except psycopg.Error as exc:
                logger.warning("console: ledger of %s not prefetched: %s", dlq, exc)
                return  # Postgres is not there: the pages will say so

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        """A fresh autocommit connection searching the console's schema."""
        with postgres_connect(
            self.settings, schema=self.schema, autocommit=True, connect_timeout=5
        ) as conn:
            yield conn

    @contextmanager
    def reader(self) -> Iterator[TopicReader]:
        """The shared topic reader, held for the block."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = TopicReader.from_settings(self.settings)
            yield self._reader

    @contextmanager
    def producer(self, purpose: str) -> Iterator[Any]:
        """An idempotent producer for one action (redrive), flushed and dropped after."""
        producer = kafka_producer(self.settings, **{"client.id": f"sidestream-console-{purpose}"})
        try:
            yield producer
        finally:
            producer.flush(10)

    def start(self) -> None:
        """Start indexing every sink's ``.dlq`` topic in the background."""
        self.dead_letters.start()

    def close(self) -> None:
        self.dead_letters.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
