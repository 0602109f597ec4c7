"""Operator console: server-side render time of every page over a large installation
(100k dead letters, 1M audit rows at full size)."""

from __future__ import annotations

from devtools.bench.harness import BenchContext, Figure, Target
from services.console._bench import measure_console_pages

SECTION = "console"


def run(ctx: BenchContext) -> list[Figure]:
    letters = ctx.sizes.pick(2_000, 100_000)
    rows = ctx.sizes.pick(20_000, 1_000_000)
    timings = measure_console_pages(ctx.settings, dead_letters=letters, audit_rows=rows)
    return [
        Figure(
            SECTION,
            f"render {page}",
            ms,
            "ms",
            # The first view of a dead-letter topic reads it whole: measured, not targeted.
            target=None if page.endswith("(first view)") else Target("<=", 200, on="value"),
            note=f"{letters:,} dead letters, {rows:,} audit rows; median of 5",
        )
        for page, ms in timings.items()
    ]
