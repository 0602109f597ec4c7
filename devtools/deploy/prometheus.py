"""Prometheus: recording and alerting rules name only series the code exports, every
alert has a firing and a quiet unit test, and promtool checks the config, the rules'
syntax and runs the rule unit tests (skipped, with the reason, when promtool is missing)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml

from devtools.deploy.metric_names import ExportedMetrics
from devtools.deploy.promql import check_references
from devtools.deploy.report import CheckReport, load_yaml, relative


def check_prometheus(
    deploy_dir: Path,
    report: CheckReport,
    metrics: ExportedMetrics,
    promtool: str | None,
    *,
    quiet: bool = False,
) -> set[str]:
    """Check the rules (and return the recording rule names); with ``quiet``, only
    collect the names (the Grafana check needs them)."""
    if quiet:
        report = CheckReport()
    prom_dir = deploy_dir / "prometheus"
    rule_files = sorted((prom_dir / "rules").glob("*.rules.yml"))
    test_files = sorted((prom_dir / "rules").glob("*.test.yml"))
    recorded: set[str] = set()
    alerts: set[str] = set()
    exprs: list[tuple[str, str]] = []
    if not rule_files:
        report.error("prometheus", relative(prom_dir, deploy_dir), "no rules/*.rules.yml")
    for path in rule_files:
        document = load_yaml(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    recorded.add(rule["record"])
                if "alert" in rule:
                    alerts.add(rule["alert"])
                exprs.append((relative(path, deploy_dir), str(rule.get("expr", ""))))
    checked = 0
    for subject, expr in exprs:
        checked += check_references(report, "prometheus", subject, [expr], metrics, recorded)
    report.ok_(
        "prometheus",
        "rules",
        f"{len(recorded)} recording and {len(alerts)} alerting rules; "
        f"{checked} metric references checked against the code",
    )
    _check_rule_test_coverage(deploy_dir, report, alerts, test_files)
    if promtool is None and quiet:
        return recorded
    if promtool is None:
        report.skip(
            "promtool",
            "prometheus",
            "promtool not found: install it with deploy/install-tools.sh "
            "(Debian's prometheus package); config/rules syntax and rule unit tests not run",
        )
        return recorded
    configs = sorted(p.name for p in prom_dir.glob("prometheus*.yml"))
    runs: list[tuple[str, list[str]]] = [
        *((f"check config {c}", [promtool, "check", "config", c]) for c in configs),
        (
            "check rules",
            [promtool, "check", "rules", *(str(p.relative_to(prom_dir)) for p in rule_files)],
        ),
        (
            "test rules",
            [promtool, "test", "rules", *(str(p.relative_to(prom_dir)) for p in test_files)],
        ),
    ]
    for label, argv in runs:
        # promtool resolves rule_files relative to the file: run it from deploy/prometheus.
        result = subprocess.run(
            argv, cwd=prom_dir, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode == 0:
            report.ok_("promtool", f"promtool {label}", "passed")
        elif "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
            # Debian builds Prometheus without the Kubernetes discovery (its Go
            # dependencies): check everything else, with the discovery swapped out.
            result = _check_config_without_kubernetes_sd(promtool, prom_dir / argv[-1])
            if result.returncode == 0:
                report.ok_(
                    "promtool",
                    f"promtool {label}",
                    "passed, with kubernetes_sd_configs replaced by an empty static list "
                    "(this promtool has no Kubernetes discovery)",
                )
            else:
                output = (result.stdout + result.stderr).strip()
                report.error("promtool", f"promtool {label}", f"failed:\n{output}")
        else:
            output = (result.stdout + result.stderr).strip()
            report.error("promtool", f"promtool {label}", f"failed:\n{output}")
    return recorded


def _check_config_without_kubernetes_sd(
    promtool: str, config_path: Path
) -> subprocess.CompletedProcess[str]:
    config = load_yaml(config_path.read_text()) or {}
    config["rule_files"] = [
        str((config_path.parent / pattern).resolve()) for pattern in config.get("rule_files", [])
    ]
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job.setdefault("static_configs", [{"targets": []}])
    with tempfile.TemporaryDirectory() as scratch:
        copy_path = Path(scratch) / config_path.name
        copy_path.write_text(yaml.safe_dump(config))
        return subprocess.run(
            [promtool, "check", "config", str(copy_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _check_rule_test_coverage(
    deploy_dir: Path, report: CheckReport, alerts: set[str], test_files: list[Path]
) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in test_files:
        document = load_yaml(path.read_text()) or {}
        for test in document.get("tests", []):
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case.get("alertname"))
    for alert in sorted(alerts):
        missing = [
            kind for kind, seen in (("firing", firing), ("quiet", quiet)) if alert not in seen
        ]
        if missing:
            report.error(
                "prometheus",
                "rules/*.test.yml",
                f"alert {alert} has no {' and no '.join(missing)} unit test case",
            )
    unknown = (firing | quiet) - alerts
    for alert in sorted(unknown):
        report.error("prometheus", "rules/*.test.yml", f"tests name unknown alert {alert}")
    report.ok_("prometheus", "rule tests", f"{len(alerts)} alerts each tested firing and quiet")
