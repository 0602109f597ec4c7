"""``run_checks``: every deploy check, in order, into one :class:`CheckReport`."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import yaml

from devtools.deploy.compose import check_compose
from devtools.deploy.grafana import check_grafana
from devtools.deploy.kubernetes import check_kubernetes
from devtools.deploy.metric_names import ExportedMetrics, exported_metrics
from devtools.deploy.prometheus import check_prometheus
from devtools.deploy.report import CheckReport, default_deploy_dir, load_yaml_all, relative

#: The Kubernetes version manifests are validated against (kubernetes-validate's schemas).
DEFAULT_KUBERNETES_VERSION = "1.33"

#: The areas :func:`run_checks` covers, in order.
AREAS = ("parse", "prometheus", "grafana", "compose", "kubernetes")


def run_checks(
    deploy_dir: Path | None = None,
    *,
    areas: Iterable[str] = AREAS,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    promtool: str | None = "auto",
    kubectl: str | None = "auto",
    metrics: ExportedMetrics | None = None,
) -> CheckReport:
    """Run the checks of ``areas`` (default: all of :data:`AREAS`) on ``deploy_dir``
    (default: the repository's ``deploy/``).

    ``promtool``/``kubectl``: the binaries; ``"auto"`` finds them on PATH, ``None`` does
    without. Checks that need a missing binary are reported as skipped, with the reason:
    kubectl renders the kustomizations (``kubectl kustomize``), promtool parses the
    config, the rules and the dashboard queries and runs the rule unit tests.
    ``metrics``: what the code exports (default: :func:`exported_metrics`, read once per
    process).
    """
    wanted = set(areas)
    unknown = wanted - set(AREAS)
    if unknown:
        raise ValueError(f"unknown area(s) {sorted(unknown)}; choose from {', '.join(AREAS)}")
    deploy_dir = deploy_dir or default_deploy_dir()
    if promtool == "auto":
        promtool = shutil.which("promtool")
    if kubectl == "auto":
        kubectl = shutil.which("kubectl")
    report = CheckReport()
    metrics = metrics or _code_metrics()
    if metrics.unresolved:
        report.skip(
            "metrics",
            "code",
            "metric names not readable statically (not checked against): "
            + ", ".join(metrics.unresolved),
        )
    for name, places in sorted(metrics.duplicates.items()):
        report.warning(
            "metrics", "code", f"{name} is declared in several places: {', '.join(places)}"
        )
    report.ok_("metrics", "code", f"{len(metrics.families)} metric families exported")
    if "parse" in wanted:
        _check_parse(deploy_dir, report)
    recorded: set[str] = set()
    if wanted & {"prometheus", "grafana"}:
        recorded = check_prometheus(
            deploy_dir,
            report,
            metrics,
            promtool if "prometheus" in wanted else None,
            quiet="prometheus" not in wanted,
        )
    if "grafana" in wanted:
        check_grafana(deploy_dir, report, metrics, recorded, promtool)
    if "compose" in wanted:
        check_compose(deploy_dir, report)
    if "kubernetes" in wanted:
        check_kubernetes(deploy_dir, report, kubernetes_version, kubectl)
    return report


@functools.cache
def _code_metrics() -> ExportedMetrics:
    return exported_metrics()


def _check_parse(deploy_dir: Path, report: CheckReport) -> None:
    count = 0
    for path in sorted(deploy_dir.rglob("*")):
        if path.suffix not in (".yml", ".yaml", ".json") or not path.is_file():
            continue
        count += 1
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            else:
                load_yaml_all(path.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            report.error("parse", relative(path, deploy_dir), f"does not parse: {exc}")
    report.ok_("parse", str(deploy_dir.name), f"{count} YAML/JSON files read")
