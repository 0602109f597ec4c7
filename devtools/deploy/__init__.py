"""Offline validation of everything under ``deploy/`` (``sidestream deploy check``).

No Docker engine, cluster or Grafana is needed; the field's own tools do the parsing:

- **YAML/JSON**: every file under ``deploy/`` parses.
- **Kubernetes** (:mod:`.kubernetes`, :mod:`.keda`): each kustomization rendered by
  ``kubectl kustomize``, built-in kinds validated strictly by ``kubernetes-validate``,
  KEDA objects against KEDA's documented fields, then cross-checked with the code
  (:mod:`.workload`: the worker registry and :class:`runtime.Settings`).
- **Compose** (:mod:`.compose`): the compose-spec JSON schema, then cross-checks.
- **Grafana** (:mod:`.grafana`) and **Prometheus** (:mod:`.prometheus`): promtool checks
  the config, the rules and the dashboard queries and runs the rule unit tests; every
  metric a rule or a panel names must be exported by the code (:mod:`.metric_names`).
"""

from devtools.deploy.checks import AREAS, DEFAULT_KUBERNETES_VERSION, run_checks
from devtools.deploy.kustomize import KustomizeError, render_kustomization
from devtools.deploy.metric_names import ExportedMetrics, exported_metrics
from devtools.deploy.promql import promql_metric_names
from devtools.deploy.report import CheckReport, Finding, default_deploy_dir

__all__ = [
    "AREAS",
    "DEFAULT_KUBERNETES_VERSION",
    "CheckReport",
    "ExportedMetrics",
    "Finding",
    "KustomizeError",
    "default_deploy_dir",
    "exported_metrics",
    "promql_metric_names",
    "render_kustomization",
    "run_checks",
]
