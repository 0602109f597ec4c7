"""Sink: audit-sink throughput against a raw COPY and a naive per-row consumer.

Events are produced before anything is timed, so only consume → decode → Postgres is
measured; the consumer-group join is reported on its own line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from consumers import CONSUMER_MIGRATIONS, BatchConfig, RawRecord, Record, WorkerOptions
from consumers.embedded import EmbeddedWorker
from consumers.sinks.audit import AUDIT_TABLE, AuditSink
from devtools.bench.harness import (
    BenchContext,
    Figure,
    Profile,
    Target,
    child_env,
    profiled,
    stop_process,
    wait_until,
)
from producers.synthetic import SyntheticEvents
from runtime import Settings
from runtime.clients import kafka_consumer, kafka_producer, postgres_connect
from runtime.lifecycle import freeze_startup_objects, hand_the_gil_over_promptly
from schemas import AuditEvent, EventDeserializer, EventSerializer

SECTION = "sink"


def _encode(events: list[AuditEvent], topic: str) -> list[tuple[bytes, bytes]]:
    serializer = EventSerializer()
    return [(e.key, serializer.serialize(e, topic)) for e in events]


def _produce(ctx: BenchContext, topic: str, events: list[AuditEvent]) -> None:
    produce_encoded(ctx, topic, _encode(events, topic))


def produce_encoded(ctx: BenchContext, topic: str, encoded: list[tuple[bytes, bytes]]) -> None:
    producer = kafka_producer(ctx.settings, **{"linger.ms": 20, "batch.num.messages": 10000})
    with ctx.progress("producing", len(encoded)) as advance:
        for i, (key, value) in enumerate(encoded, 1):
            while True:
                try:
                    producer.produce(topic, value=value, key=key)
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 10_000 == 0:
                producer.poll(0)
                advance(i)
        producer.flush(60)


def _committed(ctx: BenchContext, schema: str) -> int:
    with postgres_connect(ctx.settings, schema=schema) as conn:
        return _committed_on(conn)


def _committed_on(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets").fetchone()
    return int(row[0]) if row else 0


def measure_until_done(
    ctx: BenchContext, schema: str, total: int, label: str, timeout: float = 600
) -> tuple[float, float]:
    """Wait for the first commit, then for all; returns (join seconds, rows/s after it).

    Progress is read every 50 ms over one connection held for the whole wait: a
    connection per look (a Postgres backend started 20 times a second) cost the
    measured worker CPU on the shared cores that the raw-COPY baseline never pays.
    """
    started = time.monotonic()
    with postgres_connect(ctx.settings, schema=schema, autocommit=True) as conn:
        wait_until(lambda: _committed_on(conn) > 0, timeout=120, interval=0.02)
        first_at, first = time.monotonic(), _committed_on(conn)
        with ctx.progress(label, total) as advance:

            def done() -> bool:
                committed = _committed_on(conn)
                advance(committed)
                return committed >= total

            if not wait_until(done, timeout=timeout, interval=0.05):
                raise RuntimeError(f"{label}: only {_committed_on(conn)} of {total} rows landed")
    elapsed = time.monotonic() - first_at
    return first_at - started, (total - first) / max(elapsed, 1e-9)


def _sink_rate(
    ctx: BenchContext,
    topic: str,
    total: int,
    *,
    batch: int | None = None,
    pipeline: bool | None = None,
) -> tuple[float, float]:
    schema = ctx.schema("sink", [CONSUMER_MIGRATIONS])
    config = BatchConfig.from_settings(ctx.settings)
    if batch is not None:
        config = dataclasses.replace(config, max_records=batch)
    if pipeline is not None:
        config = dataclasses.replace(config, pipeline=pipeline)
    worker = EmbeddedWorker(
        ctx.settings,
        WorkerOptions("audit", group_id=ctx.name("g"), topics=(topic,), schema=schema),
        config=config,
    ).start()
    try:
        return measure_until_done(ctx, schema, total, f"audit sink (batch {batch or 'default'})")
    finally:
        worker.shutdown()


def _raw_copy_rate(ctx: BenchContext, events: list[AuditEvent], batch: int) -> float:
    schema = ctx.schema("copy", [CONSUMER_MIGRATIONS])
    rows = [
        AuditSink.row(Record(RawRecord("t", 0, i, None, None, [], 0), event))
        for i, event in enumerate(events)
    ]
    statement = sql.SQL("COPY audit_events ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.SQL(", ").join(map(sql.Identifier, AUDIT_TABLE.column_names))
    )
    with postgres_connect(ctx.settings, schema=schema) as conn:
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor().copy(statement) as copy:
                copy.set_types(AUDIT_TABLE.column_types)
                for row in rows[start : start + batch]:
                    copy.write_row(row)
        return len(rows) / (time.perf_counter() - started)


def _naive_rate(ctx: BenchContext, topic: str, count: int) -> float:
    """The obvious consumer: decode, INSERT one row, COMMIT, for every record."""
    schema = ctx.schema("naive", [CONSUMER_MIGRATIONS])
    consumer = kafka_consumer(ctx.settings, ctx.name("naive"))
    consumer.subscribe([topic])
    deserializer = EventDeserializer()
    placeholders = sql.SQL(", ").join(sql.Placeholder() * len(AUDIT_TABLE.columns))
    insert = sql.SQL("INSERT INTO audit_events ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, AUDIT_TABLE.column_names)), placeholders
    )
    written, started = 0, None
    try:
        with postgres_connect(ctx.settings, schema=schema) as conn:
            deadline = time.monotonic() + 120
            while written < count and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                started = started or time.perf_counter()
                event: Any = deserializer.deserialize(message.value() or b"", topic)
                raw = RawRecord(
                    topic, message.partition() or 0, message.offset() or 0, None, None, [], 0
                )
                conn.execute(insert, AuditSink.row(Record(raw, event)))
                conn.commit()
                written += 1
    finally:
        consumer.close()
    return written / (time.perf_counter() - (started or time.perf_counter()))


def worker_process(
    settings: Settings, options: WorkerOptions, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``sidestream worker run`` for ``options`` in a process of its own (quiet), with the
    connection settings of ``settings`` and ``extra_env`` on top."""
    command = [sys.executable, "-m", "sidestream", "worker", "run", options.sink]
    command += ["--group", options.group_id or "", "--schema", options.schema or ""]
    for topic in options.topics or ():
        command += ["--topic", topic]
    return subprocess.Popen(
        command,
        env={**child_env(settings), **(extra_env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:  # signal all first: they drain in parallel
        process.terminate()
    for process in processes:
        stop_process(process)


def _owners(ctx: BenchContext, schema: str) -> tuple[int, int]:
    """(distinct workers holding partitions, partitions claimed) of the group in ``schema``."""
    with postgres_connect(ctx.settings, schema=schema) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT owner), count(*) FROM consumer_offsets"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _scaling_rate(
    ctx: BenchContext,
    encoded: list[tuple[bytes, bytes]],
    partitions: int,
    workers: int,
    profile: Path | None = None,
) -> tuple[float, Profile | None]:
    """Throughput of ``workers`` processes once the group is stable, and the flame graph of
    the first worker while it was measured (when ``profile`` names where it goes).

    The events are produced only after every worker holds partitions, so a join or a
    rebalance is never inside the measured window.
    """
    topic = ctx.topic("scale", partitions=partitions)
    schema = ctx.schema("scale", [CONSUMER_MIGRATIONS])
    options = WorkerOptions("audit", group_id=ctx.name("g"), topics=(topic,), schema=schema)
    processes = [worker_process(ctx.settings, options) for _ in range(workers)]
    try:
        stable = wait_until(
            lambda: _owners(ctx, schema) == (min(workers, partitions), partitions), timeout=120
        )
        if not stable:
            raise RuntimeError(f"{workers} workers did not settle: {_owners(ctx, schema)}")
        time.sleep(1.0)  # no late rebalance: the tail of a join can still move partitions
        with contextlib.ExitStack() as stack:
            recording = None
            if profile is not None:
                recording = stack.enter_context(profiled(processes[0].pid, profile))
            produce_encoded(ctx, topic, encoded)
            _join, rate = measure_until_done(
                ctx, schema, len(encoded), f"{workers} worker process(es)"
            )
        return rate, recording
    finally:
        _stop(processes)


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _rss_growth(ctx: BenchContext, rounds: int, per_round: int) -> list[float]:
    """RSS (MiB) of one sink worker process after each of ``rounds`` rounds of
    ``per_round`` events, read from /proc as soon as the round's last offset is committed
    (no warm-up before round 1: its figure includes the worker's first batches)."""
    topic = ctx.topic("rss")
    schema = ctx.schema("rss", [CONSUMER_MIGRATIONS])
    options = WorkerOptions("audit", group_id=ctx.name("g"), topics=(topic,), schema=schema)
    process = worker_process(ctx.settings, options)
    generator = SyntheticEvents(seed=ctx.seed + 1)
    samples: list[int] = []
    try:
        for round_number in range(1, rounds + 1):
            events: list[Any] = list(generator.take(per_round, "audit"))
            _produce(ctx, topic, events)
            if not wait_until(
                lambda goal=round_number * per_round: _committed(ctx, schema) >= goal,  # type: ignore[misc]
                timeout=300,
            ):
                raise RuntimeError("RSS run: the worker fell behind")
            samples.append(_rss_kib(process.pid))
    finally:
        _stop([process])
    return [sample / 1024 for sample in samples]


def run(ctx: BenchContext) -> list[Figure]:
    total = ctx.sizes.pick(10_000, 200_000)
    batch = ctx.settings.consumer_batch_max_records
    topic = ctx.topic("sink")
    events: list[AuditEvent] = list(SyntheticEvents(seed=ctx.seed).take(total, "audit"))  # type: ignore[arg-type]
    _produce(ctx, topic, events)
    # The measured worker runs in this process (a thread): freeze what exists now, as a
    # worker process freezes what it built at start (`consumers.worker`), so the cyclic GC
    # does not rescan the benchmark's own data for the worker.
    freeze_startup_objects()
    if ctx.settings.consumer_pipeline:
        hand_the_gil_over_promptly()  # as a pipelined worker process does

    join_s, sink = _sink_rate(ctx, topic, total)
    copy = _raw_copy_rate(ctx, events, batch)
    naive = _naive_rate(ctx, topic, ctx.sizes.pick(300, 3000))
    figures = [
        Figure(
            SECTION,
            "audit sink throughput",
            sink,
            "rows/s",
            copy,
            "raw binary COPY",
            Target(">=", 0.8),
        ),
        Figure(
            SECTION,
            "audit sink vs naive consumer",
            sink,
            "rows/s",
            naive,
            "INSERT+COMMIT per row",
            Target(">=", 50),
        ),
        Figure(SECTION, "consumer group join", join_s, "s", note="excluded from throughput"),
    ]
    # The same backlog with the writer thread switched the other way: what the pipeline
    # buys in this run (single runs swing with the machine's load; this ratio less so).
    pipelined = ctx.settings.consumer_pipeline
    _join, other = _sink_rate(ctx, topic, total, pipeline=not pipelined)
    figures.append(
        Figure(
            SECTION,
            f"audit sink, writer thread {'off' if pipelined else 'on'} (CONSUMER_PIPELINE)",
            other,
            "rows/s",
            sink,
            f"writer thread {'on' if pipelined else 'off'}",
        )
    )
    for size in (500, 2000, 5000) if not ctx.sizes.quick else (500, 5000):
        _join, rate = _sink_rate(ctx, topic, total, batch=size)
        figures.append(Figure(SECTION, f"batch size {size}", rate, "rows/s", sink, "default batch"))
    encoded = _encode(events, topic)
    profile = None
    if ctx.profile_dir is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        profile = ctx.profile_dir / f"{stamp}-sink-worker.svg"
    scaling: dict[int, float] = {}
    for workers in (1, 2, 4) if not ctx.sizes.quick else (1, 2):
        scaling[workers], recording = _scaling_rate(
            ctx, encoded, 6, workers, profile if workers == 1 else None
        )
        if recording is not None:
            figures.append(
                Figure(
                    SECTION,
                    "sink worker flame graph (py-spy, 1 worker process, backlog)",
                    recording.seconds,
                    "s",
                    note=str(recording.path) if recording.path else recording.problem,
                )
            )
    for workers, rate in scaling.items():
        figures.append(
            Figure(
                SECTION,
                f"{workers} worker processes",
                rate,
                "rows/s",
                scaling[1],
                "1 process",
                note="2 cores shared with Postgres and the broker",
            )
        )
    rounds = ctx.sizes.pick(3, 10)
    curve = _rss_growth(ctx, rounds, ctx.sizes.pick(5_000, 100_000))
    figures.append(
        Figure(
            SECTION,
            f"worker RSS after round {rounds}",
            curve[-1],
            "MiB",
            curve[0],
            "after round 1",
            Target("<=", 1.1),
            note=f"flat = ratio near 1; rounds 1..{rounds}: {' '.join(f'{m:.0f}' for m in curve)}",
        )
    )
    return figures
