"""Scenario ``worker-kills``: SIGKILL sink workers at random points of a stream.

Two audit workers share one consumer group; at ``kills`` random points (in records
committed) one of them, chosen at random, is SIGKILLed — mid-batch, mid-rebalance,
wherever it is — and a new one starts in its place. Exactly once holds if every event
of the topic is one row, no more: a killed worker's uncommitted batch is re-read from
the offsets stored in Postgres with the rows it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size, fault_points
from devtools.chaos.sink_stream import SinkStream, StreamParams

NAME = "worker-kills"


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    stream: StreamParams
    kills: int
    budget_s: float


SIZES: dict[Size, Params] = {
    "tiny": Params(stream=StreamParams(events=4_000, rate=2_000), kills=2, budget_s=180),
    "quick": Params(stream=StreamParams(events=50_000, rate=5_000), kills=5, budget_s=300),
    "full": Params(stream=StreamParams(events=1_000_000, rate=5_000), kills=50, budget_s=3_600),
}


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario; the report says whether every event became exactly one row."""
    params = params or SIZES[ctx.size]
    rng = ctx.rng(NAME)
    with ScenarioRun(ctx, NAME, budget_s=params.budget_s) as run:
        stack = run.private_stack()
        stream = SinkStream(
            run, stack, params.stream, group="chaos-kills", seed=rng.randrange(2**31)
        ).start()
        for target in fault_points(rng, params.kills, params.stream.events):
            stream.wait_committed(target)
            run.sleep(rng.random() * 0.3)  # land anywhere inside a batch
            victim = rng.randrange(len(stream.workers.members))
            pid = stream.workers.members[victim].pid
            stream.workers.kill(victim)
            run.fault(f"SIGKILL worker {pid} at {stream.committed():,} committed")
        stream.finish()
    return run.report
