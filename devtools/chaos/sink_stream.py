"""The stage of the sink scenarios: audit events flowing into a topic while a group of
sink worker processes lands them in Postgres — and the exactly-once check at the end.

Flow::

    source ──▶ <topic> (private broker) ──▶ WorkerGroup (audit sink processes, one
    consumer group) ──▶ audit_events + consumer_offsets (private Postgres)

    source: PublishSource   LoadThread publishes straight to Kafka
            OutboxSource    OutboxWriter commits to the outbox; relay processes publish

Each scenario injects its own faults while the stream runs (killing workers, crashing
Postgres, freezing the broker, cutting connections); :meth:`SinkStream.finish` then
counts the events that went in against the rows: exactly once means one row per event,
no more. Progress is read from ``consumer_offsets`` (a few rows), not by counting the
table.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
from psycopg import sql

from consumers import CONSUMER_MIGRATIONS
from devtools.chaos.errors import StalledError
from devtools.chaos.processes import WorkerGroup, WorkerProcess
from devtools.chaos.scenario import ScenarioRun
from devtools.chaos.stack import PrivateStack
from devtools.chaos.traffic import LoadThread, OutboxWriter, TopicCensus, topic_census
from producers import OUTBOX_MIGRATIONS
from runtime import Settings
from runtime.clients import postgres_connect
from runtime.migrations import migrate

__all__ = ["EventSource", "OutboxSource", "PublishSource", "SinkStream", "StreamParams"]


SCHEMA = "chaos"
TOPIC = "chaos.audit"
TABLE = "audit_events"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamParams:
    """The size of a sink stream."""

    events: int
    rate: float
    """Events per second the load generator publishes."""
    partitions: int = 6
    workers: int = 2
    batch_max_records: int = 1000
    """Smaller than the production default: more commits for a fault to land between."""
    drain_timeout_s: float = 45.0
    """How long a SIGTERMed worker may take to exit (its shutdown deadline is 20 s)."""

    def __post_init__(self) -> None:
        if self.events < 1 or self.rate <= 0 or self.partitions < 1 or self.workers < 1:
            raise ValueError(f"invalid stream parameters: {self}")


def _scalar(conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, *params: object) -> int:
    row = conn.execute(query, params or None).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class EventSource(Protocol):
    """Where a stream's events come from."""

    def start(self, stream: SinkStream) -> None:
        """Start putting events into ``stream``'s topic (the topic and tables exist)."""

    def committed_in(self) -> int:
        """Events that went in so far."""

    def finish(self, stream: SinkStream) -> int:
        """Wait until every event is in the topic; how many messages it holds at least."""

    def events_in(self, stream: SinkStream, census: TopicCensus) -> int:
        """The distinct events that went in, checked against the topic's census."""


class PublishSource:
    """Events published straight to Kafka by :class:`LoadThread` (fire and forget).

    What went in is what reached the topic: an event the publisher failed to deliver
    never entered the system (it is noted, not counted as a sink loss).
    """

    def __init__(self, *, count: int, rate: float, seed: int) -> None:
        self.count = count
        self.rate = rate
        self.seed = seed
        self.load: LoadThread | None = None

    def start(self, stream: SinkStream) -> None:
        self.load = LoadThread(
            stream.settings, topic=TOPIC, count=self.count, rate=self.rate, seed=self.seed
        ).start()

    def committed_in(self) -> int:
        # The publisher reports nothing until it is done; the sink scenarios follow the
        # committed offsets instead.
        return self.count if self.load is not None and self.load.done else 0

    def finish(self, stream: SinkStream) -> int:
        assert self.load is not None, "start() first"
        result = self.load.join(stream.run.remaining())
        published = sum(result.published.values())
        if result.undelivered:
            stream.run.note(f"publisher: {result.undelivered} events undelivered")
        return published - result.undelivered

    def events_in(self, stream: SinkStream, census: TopicCensus) -> int:
        if census.distinct < self.count:
            stream.run.note(f"{self.count - census.distinct} published events never reached Kafka")
        return census.distinct


class OutboxSource:
    """Events committed to the outbox by :class:`OutboxWriter`, published by ``relays``
    relay processes (``sidestream worker run outbox-relay``).

    What went in is what committed to the outbox: every one of those must reach the
    topic (at least once) and become exactly one row.
    """

    def __init__(
        self, *, count: int, rate: float, seed: int, relays: int = 1, per_transaction: int = 10
    ) -> None:
        self.count = count
        self.rate = rate
        self.seed = seed
        self.relays = relays
        self.per_transaction = per_transaction
        self.writer: OutboxWriter | None = None
        self.relay_group: WorkerGroup | None = None

    def start(self, stream: SinkStream) -> None:
        with postgres_connect(stream.settings, autocommit=True) as conn:
            migrate(conn, [OUTBOX_MIGRATIONS], schema=SCHEMA)

        def spawn(n: int) -> WorkerProcess:
            return WorkerProcess(
                stream.worker_settings,
                "outbox-relay",
                log=stream.stack.directory / "logs" / f"relay-{n:03d}.log",
                schema=SCHEMA,
            )

        self.relay_group = WorkerGroup(spawn, self.relays)
        stream.run.on_exit(self.relay_group.close)
        self.relay_group.start()
        stream.run.watch(self.relay_group.check)
        self._start_writer(stream)

    def _start_writer(self, stream: SinkStream) -> None:
        """Start what commits events to the outbox (a subclass may write another way)."""
        self.writer = OutboxWriter(
            stream.settings,
            schema=SCHEMA,
            topic=TOPIC,
            count=self.count,
            rate=self.rate,
            seed=self.seed,
            per_transaction=self.per_transaction,
        )
        stream.run.on_exit(self.writer.stop)
        self.writer.start()

    def committed_in(self) -> int:
        return self.writer.committed if self.writer is not None else 0

    def pending(self, stream: SinkStream) -> int | None:
        """Outbox rows not yet relayed (``None`` if Postgres did not answer)."""
        try:
            with postgres_connect(stream.settings, schema=SCHEMA, connect_timeout=2) as conn:
                return _scalar(conn, sql.SQL("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))
        except psycopg.Error:
            return None

    def _join_writer(self, stream: SinkStream) -> int:
        """Wait for the writer to end; how many events it committed."""
        assert self.writer is not None, "start() first"
        committed = self.writer.join(stream.run.remaining())
        if self.writer.failed_transactions:
            stream.run.note(f"writer retried {self.writer.failed_transactions} transactions")
        return committed

    def finish(self, stream: SinkStream) -> int:
        assert self.relay_group is not None, "start() first"
        committed = self._join_writer(stream)
        stream.run.wait_for(
            lambda: self.pending(stream) == 0,
            "every outbox row relayed",
            progress=lambda: f"{self.pending(stream)} pending",
            interval_s=0.2,
        )
        codes = self.relay_group.stop(stream.params.drain_timeout_s)
        if any(code != 0 for code in codes):
            stream.run.report.errors += 1
            stream.run.note(f"relays that did not stop cleanly: exit codes {codes}")
        return committed

    def events_in(self, stream: SinkStream, census: TopicCensus) -> int:
        committed = self.committed_in()
        if census.distinct != committed:
            stream.run.report.errors += 1
            stream.run.note(
                f"the topic holds {census.distinct:,} distinct events, the outbox {committed:,}"
            )
        if census.resent:
            stream.run.note(f"relay re-sent {census.resent:,} events (at least once)")
        return committed


class SinkStream:
    """Events from ``source`` through ``params.workers`` audit sink workers.

    Args:
        run: the scenario run (owns cleanup, budget and the report).
        stack: the private stack (the stream's topic, schema and servers).
        params: sizes.
        group: the consumer group.
        source: where events come from (default: published at ``params.rate``).
        seed: the event stream's seed (for the default source).
        worker_settings: what the workers (and relays) connect with (default: the
            stack's; a proxy scenario routes them through its proxies). Progress and the
            final counts always read Postgres directly.
    """

    def __init__(
        self,
        run: ScenarioRun,
        stack: PrivateStack,
        params: StreamParams,
        *,
        group: str,
        seed: int = 0,
        source: EventSource | None = None,
        worker_settings: Settings | None = None,
    ) -> None:
        self.run = run
        self.stack = stack
        self.params = params
        self.group = group
        self.settings = stack.settings
        self.source: EventSource = source or PublishSource(
            count=params.events, rate=params.rate, seed=seed
        )
        self.worker_settings = (worker_settings or stack.settings).with_overrides(
            consumer_batch_max_records=params.batch_max_records
        )

        def spawn(n: int) -> WorkerProcess:
            return WorkerProcess(
                self.worker_settings,
                "audit",
                log=stack.directory / "logs" / f"audit-{n:03d}.log",
                group=group,
                topics=(TOPIC,),
                schema=SCHEMA,
            )

        self.workers = WorkerGroup(spawn, params.workers)
        self._last_committed = 0
        self._at_least: int | None = None

    def start(self) -> SinkStream:
        """Create the topic and tables, start the workers, and once they own every
        partition, the source (so faults land in the stream, not in the start-up)."""
        self.stack.create_topics((TOPIC, self.params.partitions), (f"{TOPIC}.dlq", 1))
        with postgres_connect(self.settings, autocommit=True) as conn:
            migrate(conn, [CONSUMER_MIGRATIONS], schema=SCHEMA)
        self.run.on_exit(self.workers.close)
        self.workers.start()
        self.run.watch(self.workers.check)
        self.wait_settled()
        self.source.start(self)
        self.run.log(
            f"streaming {self.params.events:,} events at {self.params.rate:,.0f}/s into "
            f"{self.params.partitions} partitions, {self.params.workers} workers"
        )
        return self

    # --- progress ---------------------------------------------------------------------
    def committed(self) -> int:
        """Records committed by the group (sum of its offsets in Postgres); the last
        value read while Postgres does not answer."""
        try:
            with postgres_connect(self.settings, schema=SCHEMA, connect_timeout=2) as conn:
                self._last_committed = _scalar(
                    conn,
                    sql.SQL("SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = %s"),
                    self.group,
                )
        except psycopg.Error:
            pass
        return self._last_committed

    def wait_committed(self, target: int, *, timeout_s: float | None = None) -> None:
        """Wait until ``target`` records are committed (bounded)."""
        self.run.wait_for(
            lambda: self.committed() >= target,
            f"{target:,} records committed",
            timeout_s=timeout_s,
            interval_s=0.05,
            progress=lambda: f"{self._last_committed:,}",
        )

    def owners(self) -> list[str] | None:
        """The worker that last claimed each of the group's partitions (``None`` if
        Postgres did not answer)."""
        try:
            with postgres_connect(self.settings, schema=SCHEMA, connect_timeout=2) as conn:
                rows = conn.execute(
                    "SELECT owner FROM consumer_offsets WHERE group_id = %s", (self.group,)
                ).fetchall()
        except psycopg.Error:
            return None
        return [str(owner) for (owner,) in rows]

    def settled(self) -> bool:
        """Every partition is claimed, by live workers only, and every live worker holds
        some: the group's last rebalance is over."""
        owners = self.owners()
        if owners is None or len(owners) < self.params.partitions:
            return False
        live = {f"{socket.gethostname()}-{worker.pid}" for worker in self.workers.members}
        return set(owners) == live

    def wait_settled(self, *, timeout_s: float = 120.0) -> None:
        """Wait until :meth:`settled` (bounded). If it never does, a worker that is not
        even serving ``/healthz`` is aborted so its log shows where it hangs."""
        try:
            self.run.wait_for(
                self.settled,
                "the consumer group settled (every partition owned by a live worker)",
                timeout_s=timeout_s,
                interval_s=0.2,
                progress=lambda: f"owners {sorted(set(self.owners() or []))}",
            )
        except StalledError:
            for worker in self.workers.members:
                if worker.alive and not worker.wait_ready(0):
                    worker.dump_stacks()
                    self.run.note(f"worker {worker.pid} never got ready: stacks in {worker.log}")
            raise

    # --- the end ------------------------------------------------------------------------
    def end_source(self) -> int:
        """Wait until the source has put every event in; how many messages the topic
        holds at least (the source is waited for once)."""
        if self._at_least is None:
            self._at_least = self.source.finish(self)
        return self._at_least

    def finish(self) -> TopicCensus:
        """Wait for the source and for the workers to commit all of it, stop the workers
        (SIGTERM: each must drain and exit 0), and fill the report's counts."""
        report = self.run.report
        census = topic_census(self.settings, TOPIC, at_least=self.end_source(), timeout_s=120)
        self.run.log(f"topic holds {census.messages:,} messages ({census.distinct:,} events)")
        events_in = self.source.events_in(self, census)
        # Every message is consumed and committed once per group, re-sent copies included.
        self.wait_committed(census.messages)
        codes = self.workers.stop(self.params.drain_timeout_s)
        unclean = [code for code in codes if code != 0]
        if unclean:
            report.errors += len(unclean)
            self.run.note(f"workers that did not drain cleanly at the end: exit codes {unclean}")
        with postgres_connect(self.settings, schema=SCHEMA, connect_timeout=5) as conn:
            rows = _scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE)))
            distinct = _scalar(
                conn,
                sql.SQL("SELECT count(DISTINCT event_id) FROM {}").format(sql.Identifier(TABLE)),
            )
        report.count_rows(events_in, rows, distinct)
        return census
