"""What a scenario reports, the table that shows every report, and the JSON that keeps them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from devtools.bench.harness import machine_info

__all__ = ["ScenarioReport", "report_table", "write_reports"]


@dataclass(slots=True, kw_only=True)
class ScenarioReport:
    """The outcome of one scenario run.

    For the sink scenarios ``events_in`` is what reached the system (events in the topic,
    or committed to the outbox) and ``rows_out`` the rows the sink wrote; for the cache
    scenario they are the writes and the reads served. ``errors`` counts what the
    scenario forbids besides loss and duplicates (failed reads, unclean exits, writes
    blocked by a fault they should not see).
    """

    name: str
    seed: int
    faults: int = 0
    """Faults injected (kills, crashes, freezes, stops, cut connections)."""
    events_in: int = 0
    rows_out: int = 0
    duplicates: int = 0
    missing: int = 0
    stale: int = 0
    """Cache entries older than the database after quiescence."""
    errors: int = 0
    seconds: float = 0.0
    passed: bool = False
    fault_log: list[str] = field(default_factory=list)
    """One line per fault, in order: what, when (seconds into the scenario)."""
    notes: list[str] = field(default_factory=list)
    failure: str | None = None
    """Why the scenario could not finish (an exception), if it could not."""

    def count_rows(self, events_in: int, rows_out: int, distinct: int) -> None:
        """Fill the counts from what went in and what came out (``distinct`` ids)."""
        self.events_in = events_in
        self.rows_out = rows_out
        self.duplicates = rows_out - distinct
        self.missing = max(0, events_in - distinct)
        unexpected = max(0, distinct - events_in)
        if unexpected:
            self.errors += unexpected
            self.notes.append(f"{unexpected} rows of events that never went in")

    def judge(self) -> bool:
        """Set and return ``passed``: no failure, no loss, no duplicate, nothing stale,
        no forbidden error — and at least one fault injected and one event in (else
        nothing was tested)."""
        if self.failure is None and (self.faults == 0 or self.events_in == 0):
            self.notes.append("no fault was injected or no event went in: nothing was tested")
        self.passed = (
            self.failure is None
            and self.faults > 0
            and self.events_in > 0
            and self.duplicates == 0
            and self.missing == 0
            and self.stale == 0
            and self.errors == 0
        )
        return self.passed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def report_table(reports: Sequence[ScenarioReport], *, title: str = "Sidestream chaos") -> Table:
    """One row per scenario; failures in red."""
    table = Table(title=title)
    numeric = ("seed", "faults", "events in", "rows out", "dups", "missing", "stale", "errors", "s")
    for column in ("scenario", *numeric, "result", "notes"):
        table.add_column(column, justify="right" if column in numeric else "left")
    for report in reports:
        verdict = "[green]pass[/]" if report.passed else "[red]FAIL[/]"
        notes = "; ".join(([report.failure] if report.failure else []) + report.notes)

        def bad(value: int) -> str:
            return f"[red]{value:,}[/]" if value else "0"

        table.add_row(
            report.name,
            str(report.seed),
            f"{report.faults:,}",
            f"{report.events_in:,}",
            f"{report.rows_out:,}",
            bad(report.duplicates),
            bad(report.missing),
            bad(report.stale),
            bad(report.errors),
            f"{report.seconds:.1f}",
            verdict,
            notes,
        )
    return table


def write_reports(
    reports: Sequence[ScenarioReport], directory: Path, *, size: str, seed: int
) -> Path:
    """Write ``chaos-<timestamp>.json`` into ``directory``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"chaos-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "time": stamp,
                "size": size,
                "seed": seed,
                "passed": all(r.passed for r in reports),
                "machine": machine_info(),
                "scenarios": [report.as_dict() for report in reports],
            },
            indent=2,
        )
    )
    return path
