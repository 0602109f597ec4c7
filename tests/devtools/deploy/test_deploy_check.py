"""``sidestream deploy check`` on the repository's deploy/, and on copies broken on
purpose: each check must notice the breakage it exists for."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from devtools.deploy import CheckReport, run_checks
from sidestream.deploy_cmd import app
from tests.devtools.deploy.conftest import Edit, error_messages

WORKER_AUDIT = "k8s/base/worker-audit.yaml"
DASHBOARD = "grafana/dashboards/sidestream.json"
RULES = "prometheus/rules/sidestream.rules.yml"
COMPOSE = "compose/compose.yaml"


KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl renders the kustomizations")


def _check(deploy_dir: Path, *areas: str) -> CheckReport:
    # Only the areas under test, without promtool: fast, and each test proves that its
    # own check (not another one) catches the breakage. kubectl renders the manifests.
    return run_checks(deploy_dir, areas=areas, promtool=None, kubectl=KUBECTL)


def _assert_caught(report: CheckReport, *fragments: str) -> None:
    messages = error_messages(report)
    assert not report.ok, "the broken copy passed every check"
    for fragment in fragments:
        assert fragment in messages, f"{fragment!r} not among the errors:\n{messages}"


# --- the real thing ------------------------------------------------------------------


def test_the_repositorys_deploy_folder_passes_every_check() -> None:
    report = run_checks()
    assert report.ok, error_messages(report)
    checks = {f.check for f in report.findings if f.level == "ok"}
    assert {"parse", "prometheus", "grafana", "compose", "kubernetes"} <= checks
    # Only a missing tool may skip a check, and the report says which.
    for finding in report.skipped:
        assert "not found" in finding.message or finding.check == "metrics", finding


def test_the_unbroken_copy_passes_too(deploy_copy: Path) -> None:
    # The baseline of every test below: a failure there comes from its own edit.
    report = _check(deploy_copy, "parse", "prometheus", "grafana", "compose", "kubernetes")
    assert report.ok, error_messages(report)


def test_cli_exits_0_when_clean_and_1_when_broken(deploy_copy: Path, edit: Edit) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["check", "--deploy-dir", str(deploy_copy), "--only", "grafana"])
    assert clean.exit_code == 0, clean.output
    assert "0 errors" in clean.output
    edit(DASHBOARD, "sidestream_api_requests_in_flight", "sidestream_api_requests_inflight")
    broken = runner.invoke(app, ["check", "--deploy-dir", str(deploy_copy), "--only", "grafana"])
    assert broken.exit_code == 1, broken.output
    assert "sidestream_api_requests_inflight" in broken.output


def test_cli_rejects_an_unknown_area() -> None:
    result = CliRunner().invoke(app, ["check", "--only", "helm"])
    assert result.exit_code == 2
    assert "helm" in result.output


# --- metric names --------------------------------------------------------------------


def test_a_renamed_metric_in_the_dashboard_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(DASHBOARD, "sidestream_api_requests_in_flight", "sidestream_api_requests_inflight")
    _assert_caught(
        _check(deploy_copy, "grafana"),
        "sidestream_api_requests_inflight is not exported by the code",
        "did you mean sidestream_api_requests_in_flight?",
    )


def test_a_counter_without_its_total_suffix_in_a_rule_is_caught(
    deploy_copy: Path, edit: Edit
) -> None:
    edit(
        RULES,
        "rate(sidestream_delivery_dead_letters_total[5m])",
        "rate(sidestream_delivery_dead_letters[5m])",
    )
    _assert_caught(
        _check(deploy_copy, "prometheus"),
        "metric sidestream_delivery_dead_letters is not exported",
    )


def test_an_undefined_recording_rule_in_the_dashboard_is_caught(
    deploy_copy: Path, edit: Edit
) -> None:
    edit(
        DASHBOARD,
        "sum(sidestream_api_requests_in_flight)",
        "sum(sidestream:api_in_flight:sum)",
    )
    _assert_caught(
        _check(deploy_copy, "grafana"), "recording rule sidestream:api_in_flight:sum is not defined"
    )


def test_a_panel_without_a_query_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(DASHBOARD, '"expr": "sum(sidestream_api_requests_in_flight)"', '"expr": ""')
    _assert_caught(_check(deploy_copy, "grafana"), "panel 'In flight' has a target without a query")


# --- Prometheus rules ----------------------------------------------------------------


def test_an_alert_without_unit_tests_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(
        RULES,
        "      - alert: SidestreamTargetDown\n",
        "      - alert: SidestreamUntested\n"
        "        expr: up == 0\n"
        "      - alert: SidestreamTargetDown\n",
    )
    _assert_caught(
        _check(deploy_copy, "prometheus"),
        "alert SidestreamUntested has no firing and no quiet unit test case",
    )


# --- Kubernetes ----------------------------------------------------------------------


@needs_kubectl
def test_an_unknown_field_fails_strict_schema_validation(deploy_copy: Path, edit: Edit) -> None:
    edit(WORKER_AUDIT, "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replica: 2\n")
    _assert_caught(_check(deploy_copy, "kubernetes"), "Deployment/sidestream-audit")


@needs_kubectl
def test_a_grace_period_below_the_drain_deadline_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(WORKER_AUDIT, "terminationGracePeriodSeconds: 45", "terminationGracePeriodSeconds: 15")
    _assert_caught(
        _check(deploy_copy, "kubernetes"),
        "sidestream-audit: terminationGracePeriodSeconds 15 must exceed the drain deadline",
    )


def test_a_scaled_object_on_the_wrong_consumer_group_is_caught(
    deploy_copy: Path, edit: Edit
) -> None:
    edit(
        WORKER_AUDIT,
        "consumerGroup: sidestream.sink.audit",
        "consumerGroup: sidestream.audit",
    )
    _assert_caught(
        _check(deploy_copy, "kubernetes"),
        "trigger consumerGroup 'sidestream.audit', the worker's group is 'sidestream.sink.audit'",
    )


@needs_kubectl
def test_scaling_beyond_the_partitions_is_caught(deploy_copy: Path, edit: Edit) -> None:
    # sidestream.notifications has 3 partitions (schemas/topics.yaml).
    edit("k8s/base/worker-notifications.yaml", "maxReplicaCount: 3", "maxReplicaCount: 6")
    _assert_caught(
        _check(deploy_copy, "kubernetes"),
        "maxReplicaCount 6 exceeds the 3 partitions",
    )


@needs_kubectl
def test_an_unquoted_keda_metadata_value_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(WORKER_AUDIT, 'lagThreshold: "5000"', "lagThreshold: 5000")
    _assert_caught(
        _check(deploy_copy, "kubernetes"), "metadata.lagThreshold must be a string (quote it)"
    )


@needs_kubectl
def test_an_unknown_keda_field_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(WORKER_AUDIT, "  pollingInterval: 15\n", "  pollingInterval: 15\n  maxReplicas: 4\n")
    _assert_caught(
        _check(deploy_copy, "kubernetes"), "spec.maxReplicas is not a ScaledObject field"
    )


@needs_kubectl
def test_an_unknown_setting_in_the_config_map_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(
        "k8s/base/config.yaml",
        '  SIDESTREAM_POSTGRES_POOL_MAX: "8"\n',
        '  SIDESTREAM_POSTGRES_POOL_MAX: "8"\n  SIDESTREAM_BATCH_MAX_RECORDS: "100"\n',
    )
    _assert_caught(
        _check(deploy_copy, "kubernetes"),
        "unknown setting SIDESTREAM_BATCH_MAX_RECORDS; "
        "did you mean SIDESTREAM_CONSUMER_BATCH_MAX_RECORDS?",
    )


@needs_kubectl
def test_an_undeployed_worker_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit("k8s/base/kustomization.yaml", "  - worker-notify.yaml\n", "")
    _assert_caught(
        _check(deploy_copy, "kubernetes"), "no Deployment runs `sidestream worker run notify`"
    )


@needs_kubectl
def test_a_readiness_probe_on_the_wrong_path_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(WORKER_AUDIT, "path: /readyz", "path: /ready")
    _assert_caught(
        _check(deploy_copy, "kubernetes"), "readinessProbe checks /ready, expected /readyz"
    )


@needs_kubectl
def test_an_overlay_patch_that_matches_nothing_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(
        "k8s/overlays/production/patches/notify-replicas.yaml",
        "name: sidestream-notify",
        "name: sidestream-notifier",
    )
    _assert_caught(_check(deploy_copy, "kubernetes"), "no resource matches strategic merge patch")


# --- compose -------------------------------------------------------------------------


def test_a_compose_dependency_on_a_missing_service_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(
        COMPOSE,
        "      kafka:\n        condition: service_healthy\n",
        "      broker:\n        condition: service_healthy\n",
    )
    _assert_caught(_check(deploy_copy, "compose"), "depends_on unknown service 'broker'")


def test_a_misspelt_compose_key_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit(COMPOSE, "  stop_grace_period: 30s\n", "  stop_grace_periode: 30s\n")
    _assert_caught(
        _check(deploy_copy, "compose"), "services/audit: 'stop_grace_periode' does not match"
    )


def test_a_compose_grace_period_below_the_drain_deadline_is_caught(
    deploy_copy: Path, edit: Edit
) -> None:
    edit(COMPOSE, "  stop_grace_period: 30s\n", "  stop_grace_period: 10s\n")
    _assert_caught(_check(deploy_copy, "compose"), "stop_grace_period 10s must exceed the drain")


def test_a_worker_prometheus_does_not_scrape_is_caught(deploy_copy: Path, edit: Edit) -> None:
    edit("prometheus/prometheus.yml", "          - notify\n", "")
    _assert_caught(_check(deploy_copy, "compose"), "prometheus.yml does not scrape service notify")


def test_a_missing_bind_mount_source_is_caught(deploy_copy: Path) -> None:
    shutil.rmtree(deploy_copy / "grafana" / "provisioning")
    _assert_caught(_check(deploy_copy, "compose"), "bind mount source ../grafana/provisioning")


@pytest.mark.parametrize("spec", ["70000:8000", "127.0.0.1:8000:x"])
def test_an_invalid_port_mapping_is_caught(deploy_copy: Path, edit: Edit, spec: str) -> None:
    edit(COMPOSE, '"127.0.0.1:8000:8000"', f'"{spec}"')
    _assert_caught(_check(deploy_copy, "compose"), "invalid port mapping")


def test_a_missing_promtool_is_a_skip_unless_required(
    deploy_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("devtools.deploy.checks.shutil.which", lambda _name: None)
    runner = CliRunner()
    args = ["check", "--deploy-dir", str(deploy_copy), "--only", "prometheus"]
    lenient = runner.invoke(app, args)
    assert lenient.exit_code == 0, lenient.output
    assert "skipped promtool" in lenient.output
    assert "install-tools.sh" in lenient.output
    strict = runner.invoke(app, [*args, "--require-promtool"])
    assert strict.exit_code == 1, strict.output
    assert "error promtool" in strict.output


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool parses the queries")
def test_a_dashboard_query_that_is_not_promql_is_caught_by_promtool(
    deploy_copy: Path, edit: Edit
) -> None:
    edit(
        DASHBOARD,
        '"expr": "sum(sidestream_api_requests_in_flight)"',
        '"expr": "sum(sidestream_api_requests_in_flight"',
    )
    report = run_checks(deploy_copy, areas=["grafana"], promtool="auto", kubectl=None)
    _assert_caught(report, "a query is not valid PromQL")
