"""``sidestream chaos [--quick] [--scenario NAME ...] [--seed N]`` and ``sidestream chaos list``.

Runs the fault scenarios one after another, each on a private stack of its own (the
shared stack is never touched), prints one table of reports and writes them to
``bench/results/chaos-<timestamp>.json``. Exit code 1 when any scenario lost or
duplicated an event, left a stale cache entry, or could not finish.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from devtools.chaos.report import ScenarioReport, report_table, write_reports
from devtools.chaos.runner import run_scenarios
from devtools.chaos.scenario import SIZES, ChaosContext, Size
from devtools.chaos.scenarios import SCENARIOS, describe
from sidestream.context import console, settings
from sidestream.errors import App, UsageError

app = App(help="Fault scenarios on private stacks: kills, crashes, freezes, cut connections.")


@app.callback(invoke_without_command=True)
def chaos(
    context: typer.Context,
    quick: Annotated[
        bool, typer.Option(help="Small sizes, a few minutes in all (CI): same as --size quick.")
    ] = False,
    size: Annotated[
        str | None, typer.Option(help=f"One of {', '.join(SIZES)} (default: full).")
    ] = None,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Run only these scenarios (see `chaos list`).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of every random choice (default: a random one).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the JSON report goes.")] = Path("bench/results"),
    keep_failed: Annotated[
        bool, typer.Option(help="Keep the logs and data of failed scenarios.")
    ] = True,
) -> None:
    """Run the chaos scenarios and print one report per scenario; exit 1 on any failure."""
    if context.invoked_subcommand is not None:
        return
    chosen_size = _size(quick, size)
    names = scenario or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}",
            param_hint="'--scenario'",
        )
    # Printed first, so a run that dies still says how to reproduce it.
    run_seed = seed if seed is not None else random.SystemRandom().randrange(1_000_000)
    console.print(
        f"chaos: {len(names)} scenario(s), size {chosen_size}, seed {run_seed} "
        f"(reproduce with --seed {run_seed})"
    )
    ctx = ChaosContext(
        settings=settings(),
        seed=run_seed,
        size=chosen_size,
        keep_failed=keep_failed,
        log=lambda line: console.print(line, highlight=False),
    )

    def announce(report: ScenarioReport) -> None:
        console.rule(f"{report.name}: {'pass' if report.passed else 'FAIL'}")

    reports = run_scenarios(ctx, names, on_report=announce)
    console.print(report_table(reports, title=f"Sidestream chaos (size {chosen_size})"))
    path = write_reports(reports, out, size=chosen_size, seed=run_seed)
    console.print(f"report: {path}")
    if not all(report.passed for report in reports):
        raise typer.Exit(code=1)


@app.command("list")
def list_scenarios() -> None:
    """List the scenarios and what each does."""
    table = Table(title="chaos scenarios")
    table.add_column("name")
    table.add_column("what")
    for name in SCENARIOS:
        table.add_row(name, describe(name))
    console.print(table)


def _size(quick: bool, size: str | None) -> Size:
    if size is None:
        return "quick" if quick else "full"
    if quick and size != "quick":
        raise UsageError("--quick contradicts --size " + size)
    for known in SIZES:
        if known == size:
            return known
    raise typer.BadParameter(f"one of {', '.join(SIZES)}, not {size!r}", param_hint="'--size'")
