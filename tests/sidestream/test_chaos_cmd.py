"""``sidestream chaos``: the options it checks before anything runs, and ``list``."""

from __future__ import annotations

from typer.testing import CliRunner

from devtools.chaos import SCENARIOS
from sidestream.chaos_cmd import app

runner = CliRunner()


def test_list_names_every_scenario() -> None:
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in SCENARIOS:
        assert name in result.output


def test_an_unknown_scenario_is_refused_before_anything_runs() -> None:
    result = runner.invoke(app, ["--scenario", "no-such-thing"])
    assert result.exit_code == 2
    assert "unknown scenario" in result.output


def test_quick_and_another_size_contradict() -> None:
    result = runner.invoke(app, ["--quick", "--size", "full", "--scenario", "worker-kills"])
    assert result.exit_code == 2
    assert "contradicts" in result.output


def test_an_unknown_size_is_refused() -> None:
    result = runner.invoke(app, ["--size", "huge", "--scenario", "worker-kills"])
    assert result.exit_code == 2
    assert "--size" in result.output
