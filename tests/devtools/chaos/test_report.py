"""Scenario reports: how they are judged, shown and kept."""

from __future__ import annotations

import json
import random
from pathlib import Path

from rich.console import Console

from devtools.chaos.report import ScenarioReport, report_table, write_reports
from devtools.chaos.scenario import fault_points


def _report(**fields: object) -> ScenarioReport:
    report = ScenarioReport(name="s", seed=1, faults=3)
    for name, value in fields.items():
        setattr(report, name, value)
    return report


def test_exact_counts_with_faults_pass() -> None:
    report = _report()
    report.count_rows(events_in=100, rows_out=100, distinct=100)
    assert report.judge()
    assert (report.duplicates, report.missing, report.errors) == (0, 0, 0)


def test_a_lost_event_fails() -> None:
    report = _report()
    report.count_rows(events_in=100, rows_out=99, distinct=99)
    assert report.missing == 1
    assert not report.judge()


def test_a_duplicate_fails_even_when_the_total_matches() -> None:
    report = _report()
    report.count_rows(events_in=100, rows_out=100, distinct=99)
    assert (report.duplicates, report.missing) == (1, 1)
    assert not report.judge()


def test_rows_of_events_that_never_went_in_are_errors() -> None:
    report = _report()
    report.count_rows(events_in=100, rows_out=101, distinct=101)
    assert report.errors == 1
    assert not report.judge()


def test_a_run_without_faults_or_events_tested_nothing() -> None:
    no_fault = _report(faults=0)
    no_fault.count_rows(events_in=10, rows_out=10, distinct=10)
    assert not no_fault.judge()
    assert any("no fault" in note for note in no_fault.notes)
    assert not _report().judge()  # no event went in


def test_stale_entries_errors_and_failures_fail() -> None:
    for fields in ({"stale": 1}, {"errors": 1}, {"failure": "StalledError: ..."}):
        report = _report(**fields)
        report.count_rows(events_in=5, rows_out=5, distinct=5)
        assert not report.judge(), fields


def test_table_and_json_carry_every_report(tmp_path: Path) -> None:
    passed = _report(name="a")
    passed.count_rows(events_in=7, rows_out=7, distinct=7)
    passed.judge()
    failed = _report(name="b", failure="StalledError: stalled")
    failed.judge()
    console = Console(width=200, record=True)
    console.print(report_table([passed, failed]))
    text = console.export_text()
    assert "a " in text
    assert "pass" in text
    assert "FAIL" in text
    assert "StalledError" in text

    path = write_reports([passed, failed], tmp_path / "results", size="tiny", seed=42)
    assert path.name.startswith("chaos-")
    assert path.suffix == ".json"
    data = json.loads(path.read_text())
    assert data["seed"] == 42
    assert data["size"] == "tiny"
    assert data["passed"] is False
    assert [s["name"] for s in data["scenarios"]] == ["a", "b"]
    assert data["scenarios"][0]["events_in"] == 7
    assert data["scenarios"][1]["failure"] == "StalledError: stalled"


def test_fault_points_are_sorted_inside_the_range_and_seeded() -> None:
    points = fault_points(random.Random(3), 50, 1_000_000)
    assert points == sorted(points)
    assert len(points) == 50
    assert all(50_000 <= p < 900_000 for p in points)
    assert fault_points(random.Random(3), 50, 1_000_000) == points
    assert fault_points(random.Random(4), 50, 1_000_000) != points
