"""Kustomizations are rendered by ``kubectl kustomize`` itself; the wrapper turns its
failures into one readable :class:`KustomizeError` and a missing kubectl into a skip."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.deploy import KustomizeError, default_deploy_dir, render_kustomization, run_checks

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "sidestream:latest"}]},
        },
    },
}


def _write(directory: Path, name: str, *documents: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump_all(documents, sort_keys=False))


@needs_kubectl
@pytest.mark.parametrize("root", ["k8s/base", "k8s/overlays/production"])
def test_renders_the_repositorys_kustomizations(root: str) -> None:
    assert KUBECTL is not None
    objects = render_kustomization(default_deploy_dir() / root, KUBECTL)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "ConfigMap", "ScaledObject", "PodDisruptionBudget"} <= kinds


@needs_kubectl
def test_namespace_and_images_are_applied_by_kubectl(tmp_path: Path) -> None:
    assert KUBECTL is not None
    _write(tmp_path, "app.yaml", DEPLOYMENT)
    _write(
        tmp_path,
        "kustomization.yaml",
        {
            "resources": ["app.yaml"],
            "namespace": "shop",
            "images": [{"name": "sidestream", "newTag": "1.2.3"}],
        },
    )
    (deployment,) = render_kustomization(tmp_path, KUBECTL)
    assert deployment["metadata"]["namespace"] == "shop"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "sidestream:1.2.3"


@needs_kubectl
def test_a_patch_that_matches_nothing_is_kubectls_error(tmp_path: Path) -> None:
    assert KUBECTL is not None
    _write(tmp_path, "app.yaml", DEPLOYMENT)
    _write(
        tmp_path,
        "kustomization.yaml",
        {
            "resources": ["app.yaml"],
            "patches": [{"patch": yaml.safe_dump({**DEPLOYMENT, "metadata": {"name": "nothing"}})}],
        },
    )
    with pytest.raises(KustomizeError, match="nothing"):
        render_kustomization(tmp_path, KUBECTL)


def test_a_missing_kubectl_is_a_skip_with_the_reason() -> None:
    report = run_checks(areas=["kubernetes"], promtool=None, kubectl=None)
    assert report.ok
    assert report.skipped, "kubernetes was neither checked nor reported as skipped"
    assert all("kubectl not found" in f.message for f in report.skipped if f.check == "kubernetes")
