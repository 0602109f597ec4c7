"""Scenario ``broker-freeze``: freeze the broker while writes go through the outbox.

A writer commits synthetic events to the transactional outbox (``Outbox.add`` in
Postgres transactions) at a steady rate; an outbox relay process publishes them and two
audit workers land them. At random points the broker is frozen (SIGSTOP — the local
broker keeps its data in memory, so it is never killed) for a random while, then thawed.

Passes if writes kept committing while the broker was frozen (the outbox decouples them
from Kafka), and every committed event became exactly one row after the thaw — whatever
the relay had to re-send (at least once) when its deliveries timed out.

Extension point: :func:`run_with` takes the event source, so a variant can drive the
writes another way (``broker-freeze-api`` writes through the reference API).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size, fault_points
from devtools.chaos.sink_stream import EventSource, OutboxSource, SinkStream, StreamParams

NAME = "broker-freeze"


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    stream: StreamParams
    freezes: int
    frozen_s: tuple[float, float]
    """How long each freeze lasts: a uniform draw in this range. Past the relay's
    delivery timeout (15 s) its batch fails and is re-sent after the thaw."""
    budget_s: float


SIZES: dict[Size, Params] = {
    "tiny": Params(
        stream=StreamParams(events=2_000, rate=400), freezes=1, frozen_s=(2, 3), budget_s=180
    ),
    "quick": Params(
        stream=StreamParams(events=8_000, rate=500), freezes=2, frozen_s=(3, 5), budget_s=300
    ),
    "full": Params(
        stream=StreamParams(events=100_000, rate=1_000),
        freezes=5,
        frozen_s=(5, 25),
        budget_s=1_800,
    ),
}


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario with outbox writes driven by :class:`OutboxWriter`."""
    params = params or SIZES[ctx.size]
    source = OutboxSource(
        count=params.stream.events,
        rate=params.stream.rate,
        seed=ctx.rng(f"{NAME}:events").randrange(2**31),
    )
    return run_with(ctx, NAME, params, source)


def run_with(ctx: ChaosContext, name: str, params: Params, source: EventSource) -> ScenarioReport:
    """The scenario with any event source whose writes must go on while Kafka is frozen."""
    rng = ctx.rng(name)
    with ScenarioRun(ctx, name, budget_s=params.budget_s) as run:
        stack = run.private_stack()
        stream = SinkStream(run, stack, params.stream, group=f"chaos-{name}", source=source).start()
        for point in fault_points(rng, params.freezes, params.stream.events, high=0.8):
            run.wait_for(
                lambda goal=point: source.committed_in() >= goal,  # type: ignore[misc]
                f"{point:,} events written",
                progress=source.committed_in,
            )
            frozen = rng.uniform(*params.frozen_s)
            before = source.committed_in()
            at, started = run.elapsed(), time.monotonic()
            with stack.kafka_frozen():
                run.sleep(frozen)
            written = source.committed_in() - before
            run.fault(
                f"froze the broker for {time.monotonic() - started:.1f}s at {before:,} "
                f"written; {written:,} written meanwhile",
                at=at,
            )
            if written == 0:
                run.report.errors += 1
                run.note(f"no write committed during a {frozen:.1f}s freeze")
        stream.finish()
    return run.report
