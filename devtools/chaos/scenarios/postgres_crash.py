"""Scenario ``postgres-crash``: SIGKILL Postgres mid-stream and start it again.

Postgres (the postmaster and every backend) is killed at random points of the stream,
stays down for a random moment, then restarts through crash recovery. The workers lose
their connections mid-batch — some while a COMMIT was in flight, its outcome unknown to
them — pause, retry with backoff, and carry on by themselves once it answers. Exactly
once: rows and offsets commit together, and a replayed batch dedupes on ``event_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size, fault_points
from devtools.chaos.sink_stream import SinkStream, StreamParams

NAME = "postgres-crash"


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    stream: StreamParams
    crashes: int
    down_s: tuple[float, float]
    """How long Postgres stays down: a uniform draw in this range."""
    budget_s: float


SIZES: dict[Size, Params] = {
    "tiny": Params(
        stream=StreamParams(events=4_000, rate=2_000), crashes=1, down_s=(0.5, 1.5), budget_s=180
    ),
    "quick": Params(
        stream=StreamParams(events=30_000, rate=5_000), crashes=2, down_s=(1, 3), budget_s=300
    ),
    "full": Params(
        stream=StreamParams(events=300_000, rate=5_000), crashes=5, down_s=(1, 10), budget_s=1_800
    ),
}


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario; the report says whether every event became exactly one row."""
    params = params or SIZES[ctx.size]
    rng = ctx.rng(NAME)
    with ScenarioRun(ctx, NAME, budget_s=params.budget_s) as run:
        stack = run.private_stack()
        stream = SinkStream(
            run, stack, params.stream, group="chaos-pg-crash", seed=rng.randrange(2**31)
        ).start()
        for target in fault_points(rng, params.crashes, params.stream.events):
            stream.wait_committed(target)
            run.sleep(rng.random() * 0.3)
            at, when = stream.committed(), run.elapsed()
            stack.crash_postgres()
            down = rng.uniform(*params.down_s)
            run.sleep(down)
            recovery = stack.start_postgres()
            run.fault(
                f"SIGKILL Postgres at {at:,} committed, down {down:.1f}s, "
                f"restarted in {recovery:.1f}s",
                at=when,
            )
        stream.finish()
    return run.report
