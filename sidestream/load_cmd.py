"""``sidestream load`` (``make load``): publish synthetic events at a steady rate.

Benchmarks, chaos scenarios and operators all drive load through this one generator
(:class:`producers.synthetic.SyntheticEvents`), so nobody hand-rolls events.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from producers.synthetic import KINDS, publish_load
from sidestream.context import console, settings
from sidestream.errors import App

app = App(help="Generate load.")


@app.callback(invoke_without_command=True)
def load(
    rate: Annotated[float, typer.Option(min=0.001, help="Events per second.")] = 1000,
    count: Annotated[int | None, typer.Option(min=1, help="How many events in all.")] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.001, help="Or: for how many seconds.")
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help=f"Event kinds to mix (default all): {', '.join(KINDS)}")
    ] = None,
    tenants: Annotated[int, typer.Option(min=1, help="Number of tenants.")] = 50,
    skew: Annotated[
        float, typer.Option(min=0.0, help="Zipf exponent of tenant popularity (0 = uniform).")
    ] = 1.1,
    seed: Annotated[int, typer.Option(help="Same seed, same stream.")] = 0,
) -> None:
    """Publish synthetic, valid events to the configured topics at a steady rate."""
    chosen = tuple(kind or KINDS)
    bad = [k for k in chosen if k not in KINDS]
    if bad:
        raise typer.BadParameter(
            f"unknown kind(s) {bad}; choose from {', '.join(KINDS)}", param_hint="'--kind'"
        )
    if count is None and duration is None:
        count = 10_000
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:>9,.0f}/{task.total:,.0f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        # A known total from the start: the count column formats it as a number.
        total = count if count is not None else int(rate * (duration or 0))
        task = progress.add_task("publishing", total=total)
        try:
            result = publish_load(
                settings(),
                rate=rate,
                count=count,
                duration=duration,
                kinds=chosen,  # type: ignore[arg-type]
                tenants=tenants,
                skew=skew,
                seed=seed,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    by_kind = ", ".join(f"{k}={n:,}" for k, n in sorted(result.published.items()))
    console.print(
        f"published {sum(result.published.values()):,} events in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s): {by_kind}; backpressure waits: {result.backpressure_waits}; "
        f"undelivered after flush: {result.undelivered}"
    )
    if result.undelivered:
        raise typer.Exit(code=1)
