"""``sidestream bench [--quick] [--section NAME]`` and ``sidestream bench compare A B``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from devtools.bench import (
    api,
    cache,
    console_pages,
    e2e,
    invalidation,
    live,
    peer,
    publish,
    serde,
    sink,
)
from devtools.bench.harness import BenchContext, Figure, Section, Sizes, scoreboard, write_results
from devtools.localstack import LocalStack
from sidestream.context import console, settings
from sidestream.errors import App

SECTIONS: dict[str, Section] = {
    "publish": publish.run,
    "sink": sink.run,
    "peer": peer.run,
    "cache": cache.run,
    "api": api.run,
    "e2e": e2e.run,
    "invalidation": invalidation.run,
    "live": live.run,
    "serde": serde.run,
    "console": console_pages.run,
}

app = App(help="Benchmarks against the local stack, scored against same-run baselines.")


@app.callback(invoke_without_command=True)
def bench(
    context: typer.Context,
    quick: Annotated[
        bool, typer.Option(help="Small sizes: checks the benchmarks still run.")
    ] = False,
    section: Annotated[list[str] | None, typer.Option(help="Run only these sections.")] = None,
    out: Annotated[Path, typer.Option(help="Where the JSON results go.")] = Path("bench/results"),
    strict: Annotated[bool, typer.Option(help="Exit 1 when a target is missed.")] = False,
    profile: Annotated[
        bool,
        typer.Option(
            help="Record py-spy flame graphs (SVG, next to the results) of the sink worker "
            "during the sink section and of the invalidation worker during its section."
        ),
    ] = False,
) -> None:
    """Run every benchmark section and print the scoreboard."""
    if context.invoked_subcommand is not None:
        return
    chosen = section or list(SECTIONS)
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown:
        raise typer.BadParameter(
            f"unknown section(s) {unknown}; choose from {list(SECTIONS)}", param_hint="'--section'"
        )
    LocalStack(settings()).up()
    ctx = BenchContext(
        settings(), Sizes(quick=quick), console, profile_dir=out if profile else None
    )
    figures: list[Figure] = []
    try:
        for name in chosen:
            console.rule(f"bench: {name}")
            figures += SECTIONS[name](ctx)
    finally:
        ctx.close()
    console.print(scoreboard(figures, title=f"Sidestream benchmarks{' (quick)' if quick else ''}"))
    path = write_results(figures, out, quick=quick)
    console.print(f"results: {path}")
    if strict and any(f.passed is False for f in figures):
        raise typer.Exit(code=1)


@app.command()
def compare(
    first: Annotated[Path, typer.Argument(help="An earlier results JSON.")],
    second: Annotated[Path, typer.Argument(help="A later results JSON.")],
) -> None:
    """Show how each figure moved between two runs (value and ratio)."""
    before = {(f["section"], f["name"]): f for f in json.loads(first.read_text())["figures"]}
    after = {(f["section"], f["name"]): f for f in json.loads(second.read_text())["figures"]}
    table = Table(title=f"{first.name} → {second.name}")
    for column in ("section", "figure", "before", "after", "change", "ratio before", "ratio after"):
        table.add_column(column)
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        change = "-"
        if old and new and old["value"]:
            change = f"{(new['value'] / old['value'] - 1) * 100:+.1f}%"

        def show(figure: dict[str, object] | None, field: str) -> str:
            value = figure.get(field) if figure else None
            return f"{value:.3g}" if isinstance(value, int | float) else "-"

        table.add_row(
            key[0],
            key[1],
            show(old, "value"),
            show(new, "value"),
            change,
            show(old, "ratio"),
            show(new, "ratio"),
        )
    console.print(table)
