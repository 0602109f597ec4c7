"""Replays from the console: the plan (a dry run, any role) and runs in the background
with a live progress figure (operators), each the same library calls as
``sidestream replay``: :func:`~consumers.ops.plan_replay`, :func:`~consumers.ops.reset_offsets`,
:class:`~consumers.ops.ReplayRunner` (the ordinary sink worker on a thread), or
:func:`~consumers.ops.resume_points` to continue an interrupted run.

A run's offsets are stored with its rows, so stopping one (or the console dying) loses
nothing: resume continues from the stored offsets.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from consumers import WorkerOptions
from consumers.ops import (
    GroupInspector,
    OpsError,
    ReplayPlan,
    ReplayProgress,
    ReplayRunner,
    StartAt,
    TopicReader,
    park_other_partitions,
    plan_replay,
    prepare_shadow_schema,
    replay_target,
    reset_offsets,
    resume_points,
)
from consumers.ops.positions import has_table
from runtime import Settings
from runtime.clients import postgres_connect

__all__ = [
    "ReplayJob",
    "ReplayJobs",
    "ReplayRequest",
    "ShadowComparison",
    "compare_shadow",
    "plan_for",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What the operator asked for: a sink, a start, maybe partitions, a shadow, a rate."""

    sink: str
    start: StartAt | None  # None: resume from the stored offsets
    group: str | None = None  # default: the sink's (a shadow: the shadow replay's own)
    topic: str | None = None  # default: the sink's
    partitions: tuple[int, ...] | None = None
    shadow: str | None = None
    rate: float | None = None
    force: bool = False

    def target(self) -> tuple[str, str]:
        """``(topic, group)``, as ``sidestream replay --sink`` resolves them."""
        group = None if self.shadow else self.group
        return replay_target(self.sink, group=group, topic=self.topic, shadow=self.shadow)

    def offsets_schema(self, live_schema: str) -> str:
        return self.shadow or live_schema


def plan_for(
    request: ReplayRequest,
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    groups: GroupInspector,
    live_schema: str,
) -> ReplayPlan:
    """The per-partition plan of ``request`` (changes nothing), as ``--dry-run`` prints it.

    Raises:
        ValueError: a resume request (it has no plan) or a bad choice.
        OpsError: the broker could not answer.
    """
    if request.start is None:
        raise ValueError("a resume continues from the stored offsets: it has no plan")
    if request.shadow is not None and request.shadow == live_schema:
        raise ValueError("the shadow schema must differ from the live one")
    topic, group = request.target()
    schema = request.offsets_schema(live_schema)
    # An unmigrated shadow holds no offsets: plan from nothing (the live schema has no rows
    # for the shadow group either), as the CLI does.
    if not has_table(conn, schema, "consumer_offsets"):
        schema = live_schema
    return plan_replay(
        conn=conn,
        schema=schema,
        reader=reader,
        groups=groups,
        group=group,
        topic=topic,
        start=request.start,
        partitions=request.partitions,
    )


@dataclass(slots=True)
class ReplayJob:
    """One run in the background; the page polls it."""

    id: str
    request: ReplayRequest
    started_by: str
    pipeline: str  # the console's pipeline name (the resume form sends it back)
    group: str
    topic: str
    schema: str
    state: str = "starting"  # starting, running, completed, stopped, failed
    done: int = 0
    total: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "stopped", "failed")

    @property
    def rate(self) -> float | None:
        """Records per second so far."""
        seconds = (self.finished_at or time.time()) - self.started_at
        return self.done / seconds if seconds > 0 else None


class ReplayJobs:
    """Runs replays on threads, one per group at a time; keeps the latest ``keep`` jobs.

    Args:
        settings: for the workers and their connections.
        live_schema: the schema of the live tables and offsets.
        on_finish: called with each job when it ends (the console records an audit event).
    """

    def __init__(
        self,
        settings: Settings,
        live_schema: str,
        *,
        on_finish: Callable[[ReplayJob], None] | None = None,
        keep: int = 50,
    ) -> None:
        self._settings = settings
        self._live_schema = live_schema
        self._on_finish = on_finish
        self._keep = keep
        self._jobs: OrderedDict[str, ReplayJob] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, request: ReplayRequest, *, started_by: str, pipeline: str) -> ReplayJob:
        """Start a run (reset then re-read, or resume).

        Raises:
            ValueError: a run of the same group is still going.
        """
        topic, group = request.target()
        job = ReplayJob(
            id=secrets.token_hex(6),
            request=request,
            started_by=started_by,
            pipeline=pipeline,
            group=group,
            topic=topic,
            schema=request.offsets_schema(self._live_schema),
        )
        with self._lock:
            busy = [j for j in self._jobs.values() if j.group == group and not j.finished]
            if busy:
                raise ValueError(f"replay {busy[0].id} of group {group} is still running")
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:
                oldest = next(iter(self._jobs))
                if not self._jobs[oldest].finished:
                    break
                del self._jobs[oldest]
        threading.Thread(
            target=self._run, args=(job,), name=f"replay-{job.id}", daemon=True
        ).start()
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[ReplayJob]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """Ask every run to drain (at shutdown); their offsets are stored, resume later."""
        for job in self.recent():
            job.stop.set()
        deadline = time.monotonic() + timeout_s
        while any(not j.finished for j in self.recent()) and time.monotonic() < deadline:
            time.sleep(0.1)

    # --- the run, on its thread --------------------------------------------------------
    def _run(self, job: ReplayJob) -> None:
        try:
            self._reset_and_run(job)
        except (OpsError, ValueError, ConnectionError, TimeoutError, psycopg.Error) as exc:
            job.state, job.error = "failed", " ".join(str(exc).split())
            logger.warning("console replay %s of %s failed: %s", job.id, job.group, job.error)
        except Exception as exc:  # the worker's own failure, re-raised by the runner
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            logger.error("console replay %s of %s failed: %s", job.id, job.group, job.error)
        finally:
            job.finished_at = time.time()
            if self._on_finish is not None:
                self._on_finish(job)

    def _reset_and_run(self, job: ReplayJob) -> None:
        request = job.request
        settings = self._settings
        with (
            postgres_connect(settings, autocommit=True, connect_timeout=10) as conn,
            TopicReader.from_settings(settings) as reader,
        ):
            groups = GroupInspector.from_settings(settings)
            partitions: Sequence[int] | None = request.partitions
            if request.start is None:
                starts, end_offsets = resume_points(
                    conn=conn,
                    schema=job.schema,
                    reader=reader,
                    group=job.group,
                    topic=job.topic,
                    partitions=partitions,
                )
                ends = {key: e.end for key, e in end_offsets.items()}
            else:
                if request.shadow is not None:
                    for name in prepare_shadow_schema(conn, request.shadow):
                        job.notes.append(f"shadow schema {request.shadow}: applied {name}")
                plan = plan_for(
                    request, conn=conn, reader=reader, groups=groups, live_schema=self._live_schema
                )
                result = reset_offsets(plan, conn=conn, groups=groups, force=request.force)
                job.notes.append(
                    f"reset {len(plan.partitions)} partition(s) of {job.group} in Postgres"
                    + (" and Kafka" if result.kafka_committed else "")
                )
                if result.kafka_note:
                    job.notes.append(result.kafka_note)
                if request.shadow is not None and partitions is not None:
                    parked = park_other_partitions(
                        plan, conn=conn, reader=reader, groups=groups, force=request.force
                    )
                    if parked:
                        job.notes.append(f"partitions {parked} start at their end (not replayed)")
                starts, ends = plan.new_offsets, plan.ends
            # The worker writes where the offsets live: the shadow, else the live schema.
            options = WorkerOptions(
                sink=request.sink, group_id=job.group, topics=(job.topic,), schema=job.schema
            )
            runner = ReplayRunner(
                settings=settings,
                options=options,
                starts=starts,
                ends=ends,
                reader=reader,
                rate=request.rate,
            )
            job.total, job.state = runner.total, "running"

            def progress(update: ReplayProgress) -> None:
                job.done, job.total = update.done, update.total

            outcome = runner.run(stop=job.stop, on_progress=progress)
        job.done = outcome.done
        job.state = "completed" if outcome.completed else "stopped"


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    """A sink's live table beside its shadow copy: rows per Kafka partition, and a sample
    of the event ids only one side has."""

    table: str
    live_schema: str
    shadow_schema: str
    by_partition: list[tuple[int | None, int, int]]  # partition, live rows, shadow rows
    only_live: list[str]
    only_shadow: list[str]

    @property
    def equal(self) -> bool:
        return all(live == shadow for _, live, shadow in self.by_partition) and not (
            self.only_live or self.only_shadow
        )


def compare_shadow(
    conn: psycopg.Connection[Any],
    *,
    table: str,
    live_schema: str,
    shadow_schema: str,
    sample: int = 10,
) -> ShadowComparison:
    """Count and sample both copies of ``table`` (tables without ``kafka_partition`` are
    counted whole).

    Raises:
        ValueError: the shadow schema has no such table (nothing was replayed into it).
    """
    if not has_table(conn, shadow_schema, table):
        raise ValueError(f"schema {shadow_schema} has no {table} table: replay into it first")
    live, shadow = sql.Identifier(live_schema, table), sql.Identifier(shadow_schema, table)
    partitioned = (
        conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = %s AND column_name = 'kafka_partition'",
            (live_schema, table),
        ).fetchone()
        is not None
    )
    part = sql.SQL("kafka_partition" if partitioned else "NULL::int")
    counts: dict[int | None, list[int]] = {}
    for index, name in enumerate((live, shadow)):
        for partition, rows in conn.execute(
            sql.SQL("SELECT {p}, count(*) FROM {t} GROUP BY 1").format(p=part, t=name)
        ).fetchall():
            counts.setdefault(partition, [0, 0])[index] = int(rows)

    def only(left: sql.Identifier, right: sql.Identifier) -> list[str]:
        rows = conn.execute(
            sql.SQL(
                "SELECT event_id::text FROM {l} EXCEPT SELECT event_id::text FROM {r}"
                " ORDER BY 1 LIMIT %s"
            ).format(l=left, r=right),
            (sample,),
        ).fetchall()
        return [row[0] for row in rows]

    return ShadowComparison(
        table=table,
        live_schema=live_schema,
        shadow_schema=shadow_schema,
        by_partition=[
            (p, c[0], c[1])
            for p, c in sorted(counts.items(), key=lambda i: (i[0] is None, i[0] or 0))
        ],
        only_live=only(live, shadow),
        only_shadow=only(shadow, live),
    )
