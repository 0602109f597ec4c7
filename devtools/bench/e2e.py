"""End to end: publish → row visible in Postgres, at a fixed offered load.

``EventPublisher`` → audit topic → audit sink worker (its own process, ``sidestream
worker run audit``) → ``audit_events``. Measuring starts once the worker holds every
partition and a warm-up batch has landed, so neither the group join nor the first
partition-creation is inside the window.

Events are synthetic audit events built just in time: ``occurred_at`` of event *i* is
its scheduled send time (start + i / rate), and the publisher sends each as soon as it
is due. A publisher that falls behind therefore shows up as latency instead of quietly
lowering the load (no coordinated omission).

Two views of the latency of the same events:

- **seen by a reader**: every Nth event id is polled for (every 10 ms, one query for all
  outstanding ids); latency = the wall clock when the query that found it returned -
  ``occurred_at``. An upper bound: it adds up to one poll interval and a query.
- **ingested_at - occurred_at** over every measured row: ``ingested_at`` is ``now()`` of
  the sink's transaction, i.e. its start, a little before the rows become visible; a
  lower bound.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from consumers import CONSUMER_MIGRATIONS
from devtools.bench.harness import (
    BenchContext,
    Figure,
    Target,
    claimed_partitions,
    percentile,
    stop_process,
    wait_until,
)
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticEvents
from runtime import new_registry
from runtime.clients import postgres_connect

__all__ = ["run"]

SECTION = "e2e"

_PARTITIONS = 6
_POLL_S = 0.01
_SAMPLES_PER_S = 250  # how many event ids a second are polled for
_PRODUCER = "bench-e2e"
_WARMUP_PRODUCER = "bench-e2e-warmup"


class _VisibilityPoller:
    """Polls for sampled event ids on its own thread; records when each became visible."""

    def __init__(self, ctx: BenchContext, schema: str) -> None:
        self._ctx = ctx
        self._schema = schema
        self._lock = threading.Lock()
        self._pending: dict[uuid.UUID, float] = {}  # event id -> occurred_at (epoch s)
        self.latencies_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-poller", daemon=True)
        self.error: BaseException | None = None

    def watch(self, event_id: str, occurred_at: datetime) -> None:
        with self._lock:
            self._pending[uuid.UUID(event_id)] = occurred_at.timestamp()

    @property
    def outstanding(self) -> int:
        with self._lock:
            return len(self._pending)

    def __enter__(self) -> _VisibilityPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            with postgres_connect(self._ctx.settings, schema=self._schema, autocommit=True) as conn:
                while not self._stop.is_set():
                    with self._lock:
                        ids = list(self._pending)
                    if ids:
                        rows = conn.execute(
                            "SELECT event_id FROM audit_events WHERE event_id = ANY(%s)", (ids,)
                        ).fetchall()
                        seen = time.time()
                        with self._lock:
                            for (event_id,) in rows:
                                occurred = self._pending.pop(event_id, None)
                                if occurred is not None:
                                    self.latencies_ms.append((seen - occurred) * 1000)
                    self._stop.wait(_POLL_S)
        except BaseException as exc:  # reported by the caller, not lost on this thread
            self.error = exc


def _rows(ctx: BenchContext, schema: str, producer: str) -> int:
    with postgres_connect(ctx.settings, schema=schema) as conn:
        row = conn.execute(
            "SELECT count(*) FROM audit_events WHERE producer = %s", (producer,)
        ).fetchone()
    return int(row[0]) if row else 0


def _ingest_lag_ms(ctx: BenchContext, schema: str) -> tuple[float, float]:
    """p50 and p99 of ``ingested_at - occurred_at`` of the measured rows, in ms."""
    with postgres_connect(ctx.settings, schema=schema) as conn:
        row = conn.execute(
            "SELECT percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM ingested_at - occurred_at))"
            " FROM audit_events WHERE producer = %s",
            (_PRODUCER,),
        ).fetchone()
    if row is None or row[0] is None:
        raise RuntimeError("no measured rows landed")
    p50, p99 = row[0]
    return float(p50) * 1000, float(p99) * 1000


def _publish_paced(
    publisher: EventPublisher,
    topic: str,
    events: SyntheticEvents,
    count: int,
    rate: float,
    started: float,
    poller: _VisibilityPoller,
    every: int,
) -> float:
    """Publish ``count`` events, event *i* when ``started + i / rate`` (monotonic) is due;
    every ``every``-th is watched. Returns the seconds it took."""
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            event = events.next("audit")
            publisher.publish(event, topic=topic)
            if sent % every == 0:
                poller.watch(event.event_id, event.occurred_at)
            sent += 1
        time.sleep(0.001)
    return time.monotonic() - started


def run(ctx: BenchContext) -> list[Figure]:
    rate = ctx.sizes.pick(1_000, 5_000)
    seconds = ctx.sizes.seconds(4, 30)
    count = max(1, round(rate * seconds))
    every = max(1, rate // _SAMPLES_PER_S)
    topic = ctx.topic("e2e", partitions=_PARTITIONS)
    schema = ctx.schema("e2e", [CONSUMER_MIGRATIONS])
    group = ctx.name("g")
    command = [sys.executable, "-m", "sidestream", "worker", "run", "audit", "--group", group]
    worker = ctx.spawn([*command, "--topic", topic, "--schema", schema])
    publisher = EventPublisher(
        settings=ctx.settings, registry=new_registry(), producer=_PRODUCER, max_queue=count + 10_000
    )
    try:
        with ctx.console.status("e2e: waiting for the worker to join its group..."):
            wait_until(
                lambda: (
                    worker.poll() is not None
                    or claimed_partitions(ctx, schema, group) == _PARTITIONS
                ),
                timeout=120,
            )
            if worker.poll() is not None:
                raise RuntimeError(f"the audit worker exited with {worker.returncode}")
            if claimed_partitions(ctx, schema, group) != _PARTITIONS:
                raise RuntimeError(f"the audit worker did not claim {_PARTITIONS} partitions")
            warmup = SyntheticEvents(seed=ctx.seed, producer=_WARMUP_PRODUCER)
            for event in warmup.take(100, "audit"):
                publisher.publish(event, topic=topic)
            publisher.flush(30)
            if not wait_until(lambda: _rows(ctx, schema, _WARMUP_PRODUCER) == 100, timeout=60):
                raise RuntimeError("the warm-up events did not land")

        with (
            _VisibilityPoller(ctx, schema) as poller,
            ctx.console.status(f"e2e: {count:,} events at {rate:,}/s..."),
        ):
            started_wall, started = datetime.now(UTC), time.monotonic()
            events = SyntheticEvents(
                seed=ctx.seed + 1,
                producer=_PRODUCER,
                start=started_wall,
                spacing=timedelta(seconds=1 / rate),
            )
            took = _publish_paced(publisher, topic, events, count, rate, started, poller, every)
            left = publisher.flush(60)
            if left:
                raise RuntimeError(f"{left} events were not delivered to Kafka")
            landed = wait_until(lambda: poller.outstanding == 0, timeout=60) and wait_until(
                lambda: _rows(ctx, schema, _PRODUCER) == count, timeout=60
            )
        if poller.error is not None:
            raise RuntimeError("the visibility poller failed") from poller.error
        if not landed:
            raise RuntimeError(
                f"{_rows(ctx, schema, _PRODUCER)} of {count} rows landed "
                f"({poller.outstanding} sampled ids still missing)"
            )
        lower_p50, lower_p99 = _ingest_lag_ms(ctx, schema)
    finally:
        publisher.close(10)
        worker_exit = stop_process(worker)
    samples = poller.latencies_ms
    note = f"{len(samples):,} sampled events, polled every {_POLL_S * 1000:g} ms"
    if worker_exit:
        note += f"; worker exit code {worker_exit}"
    batch_wait = ctx.settings.consumer_batch_max_wait_ms
    return [
        Figure(
            SECTION,
            "offered load",
            count / took,
            "events/s",
            float(rate),
            "target rate",
            note=f"{count:,} audit events over {took:.1f} s",
        ),
        Figure(SECTION, "publish → row visible p50", percentile(samples, 0.5), "ms", note=note),
        Figure(
            SECTION,
            "publish → row visible p99",
            percentile(samples, 0.99),
            "ms",
            target=Target("<=", 500, on="value"),
            note=f"batch max wait {batch_wait} ms",
        ),
        Figure(
            SECTION,
            "ingested_at - occurred_at p99",
            lower_p99,
            "ms",
            note=f"all {count:,} rows; p50 {lower_p50:.1f} ms; sink tx start, a lower bound",
        ),
    ]
