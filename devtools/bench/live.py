"""Live analytics: throughput of the faust worker over a pre-produced backlog."""

from __future__ import annotations

from consumers.live_analytics._bench import measure_live_analytics
from devtools.bench.harness import BenchContext, Figure, Target

SECTION = "live"


LIVE_TARGET_EVENTS_PER_S = 10_000


def run(ctx: BenchContext) -> list[Figure]:
    n = ctx.sizes.pick(2_000, 20_000)
    result = measure_live_analytics(ctx.settings, n)
    return [
        Figure(
            SECTION,
            "live-analytics worker throughput (backlog; records handed over a fetch at a time)",
            result["events_per_s"],
            "events/s",
            target=Target(">=", LIVE_TARGET_EVENTS_PER_S, on="value"),
            note=f"n={n}, late={result['late']:.0f}",
        )
    ]
