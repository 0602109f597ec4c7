"""Live analytics: throughput of the faust worker over a pre-produced backlog."""

from __future__ import annotations

from consumers.live_analytics._bench import measure_live_analytics
from devtools.bench.harness import BenchContext, Figure

SECTION = "live"


def run(ctx: BenchContext) -> list[Figure]:
    n = ctx.sizes.pick(2_000, 20_000)
    result = measure_live_analytics(ctx.settings, n)
    return [
        Figure(
            SECTION,
            "live-analytics worker throughput (backlog; 7 changelog writes per event)",
            result["events_per_s"],
            "events/s",
            note=f"n={n}, late={result['late']:.0f}",
        )
    ]
