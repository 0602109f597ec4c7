"""The Pipelines page: every worker, its group, topics, table, lag and health.

Three sources, each read the way the CLI reads it: lag per partition from
:func:`consumers.ops.measure_lag` (Postgres offsets, Kafka's committed offsets, end
offsets confirmed by reading, event-time lag); each running worker's ``/metrics`` and
``/readyz`` (:mod:`services.console.metrics`); and the worker registry (which worker
lands which topic in which table).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from consumers import SINKS
from consumers.ops import GroupLag, LagReport, PartitionLag
from schemas.topics import load_topics
from services.console.metrics import WorkerProbe
from services.workers import Worker

__all__ = ["Pipeline", "PipelineStatus", "default_pipelines", "pipeline_statuses"]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """One worker kind: what it reads and where it writes.

    ``sink`` names the batch sink (``consumers.SINKS``) for sink workers: those can be
    replayed and have a dead-letter topic per source topic.
    """

    name: str
    group: str | None
    topics: tuple[str, ...]
    target: str  # a table, "Redis", "webhooks / SMTP", ...
    sink: str | None = None
    subject: str | None = None  # the schema subject of what it reads

    @property
    def replayable(self) -> bool:
        return self.sink is not None and self.group is not None


def default_pipelines(workers: Iterable[Worker]) -> tuple[Pipeline, ...]:
    """The pipelines of the worker registry (:data:`services.workers.WORKERS`), in its
    order: what each reads, where it writes, and the schema subject of its topic."""
    events = {spec.name: spec.events for spec in load_topics()}
    found = []
    for worker in workers:
        subjects = {subject for topic in worker.topics for subject in events.get(topic, ())}
        found.append(
            Pipeline(
                worker.name,
                worker.group,
                worker.topics,
                worker.table or worker.summary,
                sink=worker.name if worker.name in SINKS else None,
                subject=subjects.pop() if len(subjects) == 1 else None,
            )
        )
    return tuple(found)


# --- the page's model -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PipelineStatus:
    """One pipeline with everything the page shows of it."""

    pipeline: Pipeline
    lag: GroupLag | None
    workers: tuple[WorkerProbe, ...]

    @property
    def records_per_s(self) -> float | None:
        rates = [w.records_per_s for w in self.workers if w.records_per_s is not None]
        return sum(rates) if rates else None

    @property
    def ready(self) -> str:
        if not self.workers:
            return "no workers"
        answers = [w.ready for w in self.workers]
        if all(answers):
            return "ready"
        return "not ready" if any(a is False for a in answers) else "unreachable"

    @property
    def paused(self) -> bool:
        return any(w.paused for w in self.workers)

    @property
    def fenced(self) -> float:
        return sum(w.fenced for w in self.workers)

    @property
    def dead_letters(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for worker in self.workers:
            for name, count in worker.dead_letters.items():
                total[name] = total.get(name, 0.0) + count
        return total

    def event_time_lag_s(self, now: datetime) -> float | None:
        """The longest any pending record of the group has waited (None: unknown)."""
        if self.lag is None or not self.lag.partitions:
            return 0.0
        waits = [p.event_time_lag_s(now) for p in self.lag.partitions]
        return None if any(w is None for w in waits) else max(w or 0.0 for w in waits)

    def outside_log(self) -> list[PartitionLag]:
        """Partitions whose stored offset lies outside the log (beyond its end, or below
        its start: the broker lost or trimmed data the offsets still point into)."""
        if self.lag is None:
            return []
        return [
            p
            for p in self.lag.partitions
            if p.postgres_offset is not None
            and (p.postgres_offset > p.ends.end or p.postgres_offset < p.ends.low)
        ]


def pipeline_statuses(
    pipelines: Sequence[Pipeline], report: LagReport | None, probes: dict[str, list[WorkerProbe]]
) -> list[PipelineStatus]:
    """Join the registry, the lag report and the probes by group and worker name."""
    by_group = {g.group: g for g in report.groups} if report is not None else {}
    return [
        PipelineStatus(
            pipeline=p,
            lag=by_group.get(p.group) if p.group else None,
            workers=tuple(probes.get(p.name, ())),
        )
        for p in pipelines
    ]
