"""Scenario ``sigterm-drain``: SIGTERM sink workers during load; each must drain cleanly.

At random points of the stream one of the two workers gets SIGTERM, as in a rolling
deploy: it stops polling, writes and commits the batch in hand, leaves the group and
exits 0 within its shutdown deadline; a new worker takes its place. Any other exit code
is an error, and so is any lost or duplicated event.

Like a rolling deploy, the next worker is stopped only once the group has settled (every
partition claimed by a live worker). This also keeps clear of a limit of the local broker
(tansu 0.6): a member that leaves while a rebalance is in progress wedges the group —
no member is assigned anything afterwards (reproduced with plain librdkafka consumers).
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size, fault_points
from devtools.chaos.sink_stream import SinkStream, StreamParams

NAME = "sigterm-drain"


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    stream: StreamParams
    stops: int
    budget_s: float


SIZES: dict[Size, Params] = {
    # Slow streams: each drain waits for the group to settle, and should still land
    # while events flow.
    "tiny": Params(stream=StreamParams(events=5_000, rate=500), stops=2, budget_s=180),
    "quick": Params(stream=StreamParams(events=30_000, rate=1_500), stops=3, budget_s=300),
    "full": Params(stream=StreamParams(events=300_000, rate=1_500), stops=20, budget_s=1_800),
}


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario; passes if every SIGTERMed worker exited 0 and every event
    became exactly one row."""
    params = params or SIZES[ctx.size]
    rng = ctx.rng(NAME)
    with ScenarioRun(ctx, NAME, budget_s=params.budget_s) as run:
        stack = run.private_stack()
        stream = SinkStream(
            run, stack, params.stream, group="chaos-sigterm", seed=rng.randrange(2**31)
        ).start()
        for target in fault_points(rng, params.stops, params.stream.events):
            stream.wait_committed(target)
            stream.wait_settled()
            run.sleep(rng.random() * 0.3)
            victim = rng.randrange(len(stream.workers.members))
            pid = stream.workers.members[victim].pid
            at = stream.committed()
            code = stream.workers.drain(victim, params.stream.drain_timeout_s)
            run.fault(f"SIGTERM worker {pid} at {at:,} committed: exit code {code}")
            if code != 0:
                run.report.errors += 1
                run.note(f"worker {pid} exited {code} after SIGTERM (expected 0)")
        stream.finish()
    return run.report
