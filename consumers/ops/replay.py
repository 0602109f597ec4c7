"""Replay: move a consumer group back — to a time, an offset or the beginning — and, if
asked, run its sink until it has re-read everything up to where the topic ended when the
run began.

Order of a reset (:func:`reset_offsets`):

1. describe the group; refuse unless it is idle (``force`` overrides);
2. in one Postgres transaction, set every partition's ``next_offset`` and bump its
   ``generation``, which fences any worker still holding it;
3. inside that transaction, commit the same offsets to Kafka for the group; if Kafka
   refuses (it does while the group has members), the transaction rolls back — unless
   forced: then Postgres, the workers' source of truth, moves alone and Kafka's offsets
   follow with the workers' first commits;
4. commit Postgres. (Should that fail after Kafka accepted, re-run the reset.)

Sinks skip rows whose ``event_id`` is stored, so replaying over live tables adds nothing;
a *shadow* replay runs the sink under a group of its own into another schema (migrated
first), to backfill or verify without touching the live tables.

A run (:class:`ReplayRunner`) is the ordinary sink worker (:func:`consumers.run_worker`,
on a thread), watched through the offsets it commits to Postgres; it is safe to
interrupt: the offsets are stored with the rows, so running again continues.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from consumers.embedded import EmbeddedWorker
from consumers.migrations_source import CONSUMER_MIGRATIONS
from consumers.ops.errors import GroupActiveError, KafkaCommitError, ReplayStalledError
from consumers.ops.groups import GroupActivity, GroupInspector
from consumers.ops.pacing import RateLimiter, ThrottledSink, paced_batch_size
from consumers.ops.positions import move_offsets, stored_offsets
from consumers.ops.reader import EndOffsets, Key, TopicReader
from consumers.ops.timeindex import offsets_for_time, parse_time
from consumers.runtime import ExitStatus
from consumers.sink import Sink
from consumers.worker import SINKS, WorkerOptions, build_sink, group_id_for
from runtime import Settings
from runtime.clients import postgres_connect
from runtime.migrations import migrate
from schemas.topics import topic_for

logger = logging.getLogger(__name__)

#: ``owner`` written into ``consumer_offsets`` by a reset (workers overwrite it on claim).
RESET_OWNER = "sidestream-replay"


# --- where to start ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FromBeginning:
    """Every record still in the topic."""

    def __str__(self) -> str:
        return "the beginning"


@dataclass(frozen=True, slots=True)
class FromTime:
    """Records stamped at or after ``when``."""

    when: datetime

    def __str__(self) -> str:
        return self.when.isoformat()


@dataclass(frozen=True, slots=True)
class ToOffset:
    """Explicit offsets: ``per_partition`` pairs, and ``default`` for the other partitions."""

    default: int | None = None
    per_partition: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str) -> ToOffset:
        """``N`` (every partition) or ``P:N,P:N`` (those partitions).

        Raises:
            ValueError: anything else.
        """
        expected = f"{text!r}: expected an offset N (every partition) or P:N,P:N, all >= 0"
        try:
            if ":" not in text:
                parsed = cls(default=int(text))
            else:
                pairs = []
                for item in text.split(","):
                    partition, _, offset = item.partition(":")
                    pairs.append((int(partition), int(offset)))
                parsed = cls(per_partition=tuple(pairs))
        except ValueError:
            raise ValueError(expected) from None
        numbers = [n for pair in parsed.per_partition for n in pair] + [parsed.default or 0]
        if min(numbers) < 0:
            raise ValueError(expected)
        return parsed

    def offset_for(self, partition: int) -> int | None:
        return dict(self.per_partition).get(partition, self.default)

    def __str__(self) -> str:
        parts = [f"{p}:{o}" for p, o in self.per_partition]
        if self.default is not None:
            parts.append(f"{self.default} elsewhere" if parts else str(self.default))
        return "offset " + ", ".join(parts)


StartAt = FromBeginning | FromTime | ToOffset


def start_at(
    *,
    from_time: str | None = None,
    to_offset: str | None = None,
    from_beginning: bool = False,
    now: datetime | None = None,
) -> StartAt:
    """Where a replay starts, from an operator's choice of exactly one of a time (ISO 8601
    or relative, ``2h``), offsets (:meth:`ToOffset.parse`) or the beginning.

    Raises:
        ValueError: none or several chosen, or one that does not parse.
    """
    chosen = [x for x in (from_time, to_offset) if x is not None] + (
        ["beginning"] if from_beginning else []
    )
    if len(chosen) != 1:
        raise ValueError("choose exactly one of --from-time, --to-offset, --from-beginning")
    if from_time is not None:
        return FromTime(parse_time(from_time, now=now or datetime.now(UTC)))
    if to_offset is not None:
        return ToOffset.parse(to_offset)
    return FromBeginning()


def replay_target(
    sink: str, *, group: str | None = None, topic: str | None = None, shadow: str | None = None
) -> tuple[str, str]:
    """``(topic, group)`` of a replay of ``sink``: the sink's topic (topics.yaml) and
    group, or for a ``shadow`` schema the shadow replay's own group; given values win.

    Raises:
        ValueError: an unknown sink.
    """
    if sink not in SINKS:
        raise ValueError(f"unknown sink {sink!r}; choose one of {', '.join(sorted(SINKS))}")
    topic = topic or topic_for(SINKS[sink]().event_type)
    if group is None:
        group = shadow_group_id(sink, shadow) if shadow else group_id_for(sink)
    return topic, group


# --- the plan -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartitionPlan:
    """One partition of a reset: where the group is, where it goes, what is re-read."""

    topic: str
    partition: int
    postgres_offset: int | None  # None: nothing stored in Postgres
    kafka_offset: int | None  # None: nothing committed in Kafka
    new_offset: int
    ends: EndOffsets
    method: str  # how new_offset was found: beginning, offset, time (broker|bisect)

    @property
    def key(self) -> Key:
        return (self.topic, self.partition)

    @property
    def reprocess(self) -> int:
        """Records the group will read again (or for the first time) from ``new_offset``."""
        return max(0, self.ends.end - self.new_offset)


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """What a reset would do; :func:`reset_offsets` applies it."""

    group: str
    topic: str
    schema: str
    start: StartAt
    activity: GroupActivity
    partitions: tuple[PartitionPlan, ...]

    @property
    def reprocess(self) -> int:
        return sum(p.reprocess for p in self.partitions)

    @property
    def new_offsets(self) -> dict[Key, int]:
        return {p.key: p.new_offset for p in self.partitions}

    @property
    def ends(self) -> dict[Key, int]:
        return {p.key: p.ends.end for p in self.partitions}

    @property
    def short_watermarks(self) -> bool:
        """The broker reported some end offset short of the real one."""
        return any(p.ends.short for p in self.partitions)


def plan_replay(
    *,
    conn: psycopg.Connection[Any],
    schema: str,
    reader: TopicReader,
    groups: GroupInspector,
    group: str,
    topic: str,
    start: StartAt,
    partitions: Sequence[int] | None = None,
) -> ReplayPlan:
    """Work out a reset of ``group`` on ``topic`` without changing anything.

    ``partitions`` defaults to all of the topic's (or, for :class:`ToOffset` without a
    default, to those it names). Explicit offsets are clamped into the partition's range.
    """
    if partitions is None and isinstance(start, ToOffset) and start.default is None:
        partitions = [p for p, _ in start.per_partition]
    keys = [(topic, p) for p in reader.partitions(topic, partitions)]
    ends = reader.ends(keys)
    stored = stored_offsets(conn, schema, group, topic)
    committed = groups.committed(group)
    activity = groups.activity(group)

    targets: dict[Key, tuple[int, str]] = {}
    if isinstance(start, FromBeginning):
        targets = {key: (ends[key].low, "beginning") for key in keys}
    elif isinstance(start, FromTime):
        found = offsets_for_time(reader, keys, start.when, ends=ends)
        targets = {key: (found[key].offset, f"time ({found[key].method})") for key in keys}
    else:
        for key in keys:
            wanted = start.offset_for(key[1])
            if wanted is None:
                raise ValueError(f"no offset given for partition {key[1]} of {topic}")
            clamped = min(max(wanted, ends[key].low), ends[key].end)
            targets[key] = (
                clamped,
                "offset" if clamped == wanted else f"offset (clamped from {wanted})",
            )

    return ReplayPlan(
        group=group,
        topic=topic,
        schema=schema,
        start=start,
        activity=activity,
        partitions=tuple(
            PartitionPlan(
                topic=key[0],
                partition=key[1],
                postgres_offset=stored.get(key),
                kafka_offset=committed.get(key),
                new_offset=targets[key][0],
                ends=ends[key],
                method=targets[key][1],
            )
            for key in keys
        ),
    )


@dataclass(frozen=True, slots=True)
class ResetResult:
    """What a reset did."""

    plan: ReplayPlan
    activity: GroupActivity  # as described right before moving
    kafka_committed: bool
    kafka_note: str | None = None  # why Kafka's offsets did not move (forced resets)


def reset_offsets(
    plan: ReplayPlan,
    *,
    conn: psycopg.Connection[Any],
    groups: GroupInspector,
    force: bool = False,
    owner: str = RESET_OWNER,
) -> ResetResult:
    """Apply ``plan``: Postgres and Kafka offsets together (see the module docstring).

    Raises:
        GroupActiveError: the group has (or may have) live members and ``force`` is off.
        KafkaCommitError: Kafka refused the offsets (nothing changed), ``force`` off.
    """
    activity = groups.activity(plan.group)  # again: the plan may be minutes old
    if not activity.idle and not force:
        raise GroupActiveError(plan.group, activity.state, activity.detail)
    offsets = plan.new_offsets
    note = None
    with conn.transaction():
        move_offsets(conn, plan.schema, plan.group, offsets, owner=owner)
        try:
            groups.commit(plan.group, offsets)
        except KafkaCommitError as exc:
            if not force:
                raise
            note = (
                f"Kafka kept its committed offsets ({'; '.join(exc.errors)}); "
                "the workers move them with their first commits"
            )
    logger.info(
        "reset group %s on %s to %s: %s",
        plan.group,
        plan.topic,
        plan.start,
        ", ".join(f"[{p.partition}]@{p.new_offset}" for p in plan.partitions),
    )
    return ResetResult(plan, activity, kafka_committed=note is None, kafka_note=note)


def resume_points(
    *,
    conn: psycopg.Connection[Any],
    schema: str,
    reader: TopicReader,
    group: str,
    topic: str,
    partitions: Sequence[int] | None = None,
) -> tuple[dict[Key, int], dict[Key, EndOffsets]]:
    """Where an interrupted replay stands (its stored offsets) and where the topic ends now."""
    keys = [(topic, p) for p in reader.partitions(topic, partitions)]
    ends = reader.ends(keys)
    stored = stored_offsets(conn, schema, group, topic)
    starts = {}
    for key in keys:
        position = stored.get(key)
        starts[key] = ends[key].low if position is None else position
    return starts, ends


# --- shadow targets -----------------------------------------------------------------------
def shadow_group_id(sink: str, schema: str) -> str:
    """The consumer group of a shadow replay of ``sink`` into ``schema``."""
    return f"sidestream.replay.{sink}.{schema}"


def prepare_shadow_schema(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Create or upgrade the consumers' tables in ``schema``; returns what was applied.

    ``conn`` must be in autocommit mode (migrations run one transaction each).
    """
    applied = migrate(conn, [CONSUMER_MIGRATIONS], schema=schema)
    return [f"{m.version:04d}_{m.name}" for m in applied]


#: An offset beyond any partition's end: clamped to the end.
_PAST_ANY_END = 2**62


def park_other_partitions(
    plan: ReplayPlan,
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    groups: GroupInspector,
    force: bool = False,
) -> list[int]:
    """A shadow group reads every partition of the topic: those not in ``plan`` start at
    their end, so only the chosen ones are copied. Returns the parked partitions."""
    chosen = {p.partition for p in plan.partitions}
    others = [p for p in reader.partitions(plan.topic) if p not in chosen]
    if not others:
        return []
    parked = plan_replay(
        conn=conn,
        schema=plan.schema,
        reader=reader,
        groups=groups,
        group=plan.group,
        topic=plan.topic,
        start=ToOffset(default=_PAST_ANY_END),
        partitions=others,
    )
    reset_offsets(parked, conn=conn, groups=groups, force=force)
    return others


# --- running ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayProgress:
    """How far a run is: records re-read out of the total, and the stored positions."""

    done: int
    total: int
    positions: Mapping[Key, int | None]


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """How a run ended."""

    group: str
    done: int
    total: int
    completed: bool  # every partition reached its end offset
    seconds: float
    worker_status: ExitStatus | None


class ReplayRunner:
    """Runs ``options.sink`` for ``options.group_id`` until the group's Postgres offsets
    reach ``ends``, then stops the worker.

    Args:
        settings: for the worker (brokers, Postgres, batch sizes).
        options: sink, group (required), topics and schema of the worker.
        starts: each partition's offset when the run began (the progress baseline).
        ends: each partition's end offset captured when the run began.
        reader: to tell a partition with nothing left below its end (e.g. it ends in
            transaction markers) from a stuck worker.
        rate: records per second at most; None for as fast as the worker goes.
        registry: the worker's metrics registry (default: a fresh one).
        stall_timeout_s: no progress for this long raises :class:`ReplayStalledError`.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        options: WorkerOptions,
        starts: Mapping[Key, int],
        ends: Mapping[Key, int],
        reader: TopicReader,
        rate: float | None = None,
        sink: Sink | None = None,
        poll_interval_s: float = 0.5,
        settle_s: float = 5.0,
        stall_timeout_s: float = 300.0,
        shutdown_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not options.group_id:
            raise ValueError("a replay run needs an explicit group id")
        self.group = options.group_id
        self.schema = options.schema or settings.postgres_schema
        self._settings = settings
        self._starts = dict(starts)
        self._ends = dict(ends)
        self._reader = reader
        self._poll_interval_s = poll_interval_s
        self._settle_s = settle_s
        self._stall_timeout_s = stall_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._clock = clock
        inner = sink or build_sink(options.sink)
        # Any free metrics port: the replay may run next to a worker that holds the
        # configured one.
        overrides: dict[str, Any] = {"metrics_port": 0}
        if rate is not None:
            inner = ThrottledSink(inner, RateLimiter(rate))
            overrides["consumer_batch_max_records"] = paced_batch_size(
                rate, settings.consumer_batch_max_records
            )
        worker_settings = settings.with_overrides(**overrides)
        self.worker = EmbeddedWorker(worker_settings, options, sink=inner)
        self.total = sum(max(0, self._ends[k] - self._starts.get(k, 0)) for k in self._ends)

    @property
    def registry(self) -> CollectorRegistry:
        """The worker's metrics (rows written, duplicates skipped, ...)."""
        return self.worker.registry

    def run(
        self,
        *,
        stop: threading.Event | None = None,
        on_progress: Callable[[ReplayProgress], None] | None = None,
    ) -> ReplayOutcome:
        """Run until done, ``stop`` is set, or the worker exits; the worker is always
        drained and stopped before this returns.

        Raises:
            ReplayStalledError: no progress for ``stall_timeout_s``.
            Exception: whatever killed the worker.
        """
        stop = stop or threading.Event()
        started = self._clock()
        completed = False
        self.worker.start()
        try:
            with postgres_connect(self._settings, autocommit=True, connect_timeout=10) as conn:
                completed = self._watch(conn, stop, on_progress)
        finally:
            status = self.worker.shutdown(self._shutdown_timeout_s)
        with postgres_connect(self._settings, autocommit=True, connect_timeout=10) as conn:
            final = self._progress(conn)
        if on_progress is not None:
            on_progress(final)
        return ReplayOutcome(
            group=self.group,
            done=final.done,
            total=final.total,
            completed=completed or self._finished(final.positions),
            seconds=self._clock() - started,
            worker_status=status,
        )

    def _watch(
        self,
        conn: psycopg.Connection[Any],
        stop: threading.Event,
        on_progress: Callable[[ReplayProgress], None] | None,
    ) -> bool:
        last_done, last_change, last_probe = -1, self._clock(), self._clock()
        while True:
            progress = self._progress(conn)
            if on_progress is not None:
                on_progress(progress)
            if self._finished(progress.positions):
                return True
            if stop.is_set() or self.worker.status is not None or self.worker.error is not None:
                return False  # interrupted, or the worker ended (shutdown() re-raises)
            now = self._clock()
            if progress.done != last_done:
                last_done, last_change = progress.done, now
            elif now - last_change >= self._settle_s and now - last_probe >= self._settle_s:
                last_probe = now
                if self._nothing_left(progress.positions):
                    return True
                if now - last_change >= self._stall_timeout_s:
                    raise ReplayStalledError(
                        self.group, now - last_change, progress.total - progress.done
                    )
            stop.wait(self._poll_interval_s)

    def _progress(self, conn: psycopg.Connection[Any]) -> ReplayProgress:
        stored = stored_offsets(conn, self.schema, self.group)
        positions = {key: stored.get(key) for key in self._ends}
        done = 0
        for key, end in self._ends.items():
            start = self._starts.get(key, 0)
            position = positions[key]
            if position is not None:
                done += max(0, min(position, end) - start)
        return ReplayProgress(done, self.total, positions)

    def _finished(self, positions: Mapping[Key, int | None]) -> bool:
        return not self._behind(positions)

    def _behind(self, positions: Mapping[Key, int | None]) -> dict[Key, int]:
        """The partitions below their end offset, with their positions."""
        behind = {}
        for key, end in self._ends.items():
            position = positions.get(key)
            position = self._starts.get(key, 0) if position is None else position
            if position < end:
                behind[key] = position
        return behind

    def _nothing_left(self, positions: Mapping[Key, int | None]) -> bool:
        """No readable record remains below the end of any unfinished partition."""
        peeks = self._reader.peek(self._behind(positions))
        return all(peek is None or peek.offset >= self._ends[key] for key, peek in peeks.items())
