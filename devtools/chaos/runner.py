"""Running scenarios one after another, each on its own private stack."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext
from devtools.chaos.scenarios import SCENARIOS

__all__ = ["run_scenarios"]


def run_scenarios(
    ctx: ChaosContext,
    names: Sequence[str] | None = None,
    *,
    on_report: Callable[[ScenarioReport], None] | None = None,
) -> list[ScenarioReport]:
    """Run the scenarios ``names`` (default: all, in their order); one report each.

    A scenario that breaks reports its failure; the next one runs anyway.

    Raises:
        ValueError: an unknown scenario name (before anything runs).
    """
    chosen = list(names or SCENARIOS)
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    reports = []
    for name in chosen:
        report = SCENARIOS[name](ctx)
        reports.append(report)
        if on_report is not None:
            on_report(report)
    return reports
