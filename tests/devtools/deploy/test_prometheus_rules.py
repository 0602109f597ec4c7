"""The alerting rules under promtool: syntax, unit tests, and unit tests that notice
a changed rule (so they are not just always green)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devtools.deploy import default_deploy_dir

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed: run deploy/install-tools.sh "
    "(Debian's prometheus package; CI installs it)",
)


def _promtool(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_config_and_rules_are_valid() -> None:
    prom = default_deploy_dir() / "prometheus"
    result = _promtool(prom, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    rules = default_deploy_dir() / "prometheus" / "rules"
    result = _promtool(rules, "test", "rules", "sidestream.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("sidestream:consumer_lag:sum > 10000", "sidestream:consumer_lag:sum > 20000"),
        (
            'expr: up{job="sidestream"} == 0\n        for: 2m',
            'expr: up{job="sidestream"} == 0\n        for: 10m',
        ),
        ("sidestream:api_error_ratio:rate5m > 0.01\n", "sidestream:api_error_ratio:rate5m > 0.1\n"),
        (
            "(sidestream_consumer_offset_out_of_range) == 1\n        for: 1m",
            "(sidestream_consumer_offset_out_of_range) == 1\n        for: 5m",
        ),
    ],
)
def test_rule_unit_tests_fail_when_a_rule_changes(tmp_path: Path, old: str, new: str) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(default_deploy_dir() / "prometheus" / "rules", rules)
    path = rules / "sidestream.rules.yml"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))
    result = _promtool(rules, "test", "rules", "sidestream.rules.test.yml")
    assert result.returncode != 0, "the unit tests did not notice the changed rule"
    assert "FAILED" in result.stdout + result.stderr


@needs_promtool
def test_the_kubernetes_scrape_config_is_checked_even_without_kubernetes_discovery(
    tmp_path: Path,
) -> None:
    # Debian's promtool lacks kubernetes_sd_configs; the check swaps it out and still
    # validates the rest, so a broken relabel rule is caught.
    from devtools.deploy import run_checks

    deploy = tmp_path / "deploy"
    shutil.copytree(default_deploy_dir(), deploy)
    path = deploy / "prometheus" / "prometheus-kubernetes.yml"
    text = path.read_text()
    assert text.count("action: keep") == 2
    path.write_text(text.replace("action: keep", "action: kept", 1))
    report = run_checks(deploy, areas=["prometheus"], kubectl=None)
    messages = [f.message for f in report.errors if "prometheus-kubernetes.yml" in f.subject]
    assert messages, [f.message for f in report.findings]
    assert "kept" in messages[0]
