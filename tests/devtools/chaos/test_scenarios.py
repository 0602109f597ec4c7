"""Every chaos scenario at its tiny size, on a private stack of its own: it must inject
its faults and still find every event exactly once (and no stale cache entry).

These are the `make test-chaos` (CI) runs of the suite; `make chaos-quick` and
`make chaos` run the same scenarios bigger.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.chaos import SCENARIOS, ChaosContext, ScenarioReport
from runtime import Settings

SEED = int(os.environ.get("SIDESTREAM_TEST_SEED", "1234"))


def _run(name: str, settings: Settings, tmp_path: Path) -> ScenarioReport:
    ctx = ChaosContext(settings=settings, seed=SEED, size="tiny", root=tmp_path)
    report = SCENARIOS[name](ctx)
    # Every started server and process is gone, and so is the scratch dir (if it passed).
    assert report.passed == (not any(tmp_path.iterdir())), list(tmp_path.iterdir())
    return report


@pytest.mark.chaos
@pytest.mark.parametrize(
    "name", ["worker-kills", "postgres-crash", "broker-freeze", "proxy-faults", "sigterm-drain"]
)
def test_sink_scenarios_deliver_every_event_exactly_once(
    name: str, stack_settings: Settings, tmp_path: Path
) -> None:
    report = _run(name, stack_settings, tmp_path)
    assert report.passed, report
    assert report.faults >= 1
    assert report.events_in > 0
    assert report.rows_out == report.events_in
    assert (report.duplicates, report.missing, report.errors) == (0, 0, 0)
    assert len(report.fault_log) >= 1


@pytest.mark.chaos
def test_broker_freeze_through_the_api(stack_settings: Settings, tmp_path: Path) -> None:
    report = _run("broker-freeze-api", stack_settings, tmp_path)
    assert report.passed, report
    assert report.rows_out == report.events_in > 0
    assert (report.duplicates, report.missing, report.errors) == (0, 0, 0)


@pytest.mark.chaos
def test_redis_restart_fails_no_read_and_leaves_nothing_stale(
    stack_settings: Settings, tmp_path: Path
) -> None:
    report = _run("redis-restart", stack_settings, tmp_path)
    assert report.passed, report
    assert report.faults >= 1
    assert report.events_in > 0
    assert report.rows_out > 0
    assert (report.stale, report.errors) == (0, 0)
    # The outage was felt: some reads went to the loader and invalidations waited.
    assert any("reads served by the loader" in note for note in report.notes)
