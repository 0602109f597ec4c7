"""Operator console: server-side render time of every page over a large installation
(100k dead letters, 1M audit rows at full size)."""

from __future__ import annotations

from devtools.bench.harness import BenchContext, Figure, Target
from services.console._bench import INDEX_FIGURE, measure_console_pages

SECTION = "console"


def run(ctx: BenchContext) -> list[Figure]:
    letters = ctx.sizes.pick(2_000, 100_000)
    rows = ctx.sizes.pick(20_000, 1_000_000)
    timings = measure_console_pages(ctx.settings, dead_letters=letters, audit_rows=rows)
    note = f"{letters:,} dead letters, {rows:,} audit rows"
    index_ms = timings.pop(INDEX_FIGURE)
    return [
        Figure(
            SECTION,
            f"render {page}",
            ms,
            "ms",
            # The worst single view while the index reads is shown, not targeted: on the
            # shared machine one view in a run can wait for the CPU, whatever it does.
            target=None if ", max" in page else Target("<=", 200, on="value"),
            note=note + ("" if "(" in page else "; median of 5"),
        )
        for page, ms in timings.items()
    ] + [
        # Background work, no page waits for it: measured, not targeted.
        Figure(SECTION, INDEX_FIGURE, index_ms / 1000, "s", target=None, note=note)
    ]
