"""``sidestream load`` (``make load``): publish synthetic events at a steady rate.

Benchmarks, chaos scenarios and operators all drive load through this one generator
(:class:`producers.synthetic.SyntheticEvents`), so nobody hand-rolls events.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from producers import Backpressure, EventPublisher
from producers.synthetic import KINDS, Kind, SyntheticEvents
from runtime import Settings, new_registry
from sidestream.context import console, settings
from sidestream.errors import App

app = App(help="Generate load.")


@dataclass
class LoadResult:
    published: Counter[str]
    backpressure_waits: int
    seconds: float
    undelivered: int

    @property
    def rate(self) -> float:
        return sum(self.published.values()) / max(self.seconds, 1e-9)


def publish_load(
    config: Settings,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    kinds: tuple[Kind, ...] = KINDS,
    tenants: int = 50,
    skew: float = 1.1,
    seed: int = 0,
    topic_override: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> LoadResult:
    """Publish ``count`` events (or for ``duration`` seconds) at ``rate`` events/s.

    Pacing is absolute (event *i* is due at ``start + i/rate``), so a stall is caught up
    rather than lowering the average. ``Backpressure`` from the publisher is honoured
    by waiting its ``retry_after`` and retrying the same event.
    """
    if rate <= 0:
        raise typer.BadParameter("--rate must be positive")
    if count is None and duration is None:
        raise typer.BadParameter("give --count or --duration")
    total = count if count is not None else int(rate * (duration or 0))
    mix = [1.0 if kind in kinds else 0.0 for kind in KINDS]
    generator = SyntheticEvents(seed=seed, tenants=tenants, skew=skew, mix=mix)
    publisher = EventPublisher(settings=config, producer="sidestream-load", registry=new_registry())
    published: Counter[str] = Counter()
    waits = 0
    task = progress.add_task("publishing", total=total) if progress else None
    start = time.monotonic()
    try:
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = generator.next()
            topic = (topic_override or {}).get(event.KIND)
            while True:
                try:
                    publisher.publish(event, topic=topic)
                    break
                except Backpressure as exc:
                    waits += 1
                    time.sleep(exc.retry_after)
            published[event.KIND] += 1
            if progress is not None and task is not None and i % 200 == 0:
                progress.update(task, completed=i)
        undelivered = publisher.flush(30)
    finally:
        publisher.close(10)
    if progress is not None and task is not None:
        progress.update(task, completed=total)
    return LoadResult(published, waits, time.monotonic() - start, undelivered)


@app.callback(invoke_without_command=True)
def load(
    rate: Annotated[float, typer.Option(help="Events per second.")] = 1000,
    count: Annotated[int | None, typer.Option(help="How many events in all.")] = None,
    duration: Annotated[float | None, typer.Option(help="Or: for how many seconds.")] = None,
    kind: Annotated[
        list[str] | None, typer.Option(help=f"Event kinds to mix (default all): {', '.join(KINDS)}")
    ] = None,
    tenants: Annotated[int, typer.Option(help="Number of tenants.")] = 50,
    skew: Annotated[
        float, typer.Option(help="Zipf exponent of tenant popularity (0 = uniform).")
    ] = 1.1,
    seed: Annotated[int, typer.Option(help="Same seed, same stream.")] = 0,
) -> None:
    """Publish synthetic, valid events to the configured topics at a steady rate."""
    chosen = tuple(kind or KINDS)
    bad = [k for k in chosen if k not in KINDS]
    if bad:
        raise typer.BadParameter(f"unknown kind(s) {bad}; choose from {', '.join(KINDS)}")
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
        result = publish_load(
            settings(),
            rate=rate,
            count=count,
            duration=duration,
            kinds=chosen,  # type: ignore[arg-type]
            tenants=tenants,
            skew=skew,
            seed=seed,
            progress=progress,
        )
    by_kind = ", ".join(f"{k}={n:,}" for k, n in sorted(result.published.items()))
    console.print(
        f"published {sum(result.published.values()):,} events in {result.seconds:.1f}s "
        f"({result.rate:,.0f}/s): {by_kind}; backpressure waits: {result.backpressure_waits}; "
        f"undelivered after flush: {result.undelivered}"
    )
    if result.undelivered:
        raise typer.Exit(code=1)
