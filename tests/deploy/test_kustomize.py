"""The kustomize subset renderer: what it supports, what it refuses, and that it
renders exactly what ``kubectl kustomize`` renders for this repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidestream.deploy_check import KustomizeError, default_deploy_dir, render_kustomization

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "sidestream:latest",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    },
                    {"name": "sidecar", "image": "busybox:1.36"},
                ]
            },
        },
    },
}
SCALED = {
    "apiVersion": "keda.sh/v1alpha1",
    "kind": "ScaledObject",
    "metadata": {"name": "web"},
    "spec": {
        "scaleTargetRef": {"name": "web"},
        "triggers": [{"type": "kafka", "metadata": {"topic": "t", "lagThreshold": "5"}}],
    },
}


def _write(directory: Path, name: str, *documents: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(yaml.safe_dump_all(documents, sort_keys=False))


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    _write(base, "app.yaml", DEPLOYMENT, SCALED)
    _write(base, "kustomization.yaml", {"resources": ["app.yaml"]})
    return base


def _overlay(tmp_path: Path, **spec: Any) -> Path:
    _base(tmp_path)
    overlay = tmp_path / "overlay"
    _write(overlay, "kustomization.yaml", {"resources": ["../base"], **spec})
    return overlay


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def test_strategic_merge_merges_containers_and_env_by_name(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path, patches=[{"path": "patch.yaml"}])
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                        }
                    ]
                }
            },
        },
    }
    _write(overlay, "patch.yaml", patch)
    deployment = _by_kind(render_kustomization(overlay))["Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert [c["name"] for c in containers] == ["web", "sidecar"]  # sidecar kept
    assert containers[0]["image"] == "sidestream:latest"  # untouched fields kept
    assert containers[0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]


def test_json_patch_applies_to_every_target_match(tmp_path: Path) -> None:
    operations = [
        {"op": "add", "path": "/spec/triggers/0/metadata/tls", "value": "enable"},
        {"op": "replace", "path": "/spec/triggers/0/metadata/lagThreshold", "value": "50"},
        {"op": "remove", "path": "/spec/triggers/0/metadata/topic"},
    ]
    overlay = _overlay(
        tmp_path, patches=[{"path": "ops.yaml", "target": {"kind": "ScaledObject", "name": "w.*"}}]
    )
    (overlay / "ops.yaml").write_text(yaml.safe_dump(operations))
    scaled = _by_kind(render_kustomization(overlay))["ScaledObject"]
    assert scaled["spec"]["triggers"][0]["metadata"] == {"lagThreshold": "50", "tls": "enable"}


def test_namespace_labels_and_images(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        namespace="prod",
        labels=[{"pairs": {"env": "prod"}, "includeTemplates": True}],
        images=[
            {"name": "sidestream", "newName": "registry.example.com/sidestream", "newTag": "1.2"}
        ],
    )
    objects = _by_kind(render_kustomization(overlay))
    deployment = objects["Deployment"]
    assert deployment["metadata"]["namespace"] == "prod"
    assert deployment["metadata"]["labels"] == {"env": "prod"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"app": "web", "env": "prod"}
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # immutable: untouched
    images = [c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert images == ["registry.example.com/sidestream:1.2", "busybox:1.36"]
    assert objects["ScaledObject"]["metadata"]["namespace"] == "prod"


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"commonLabels": {"a": "b"}}, "unsupported kustomize field(s) commonLabels"),
        ({"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]}, "selectors are immutable"),
        ({"patches": [{"path": "missing.yaml"}]}, "patch missing.yaml does not exist"),
        ({"resources": ["../base", "nowhere.yaml"]}, "resource nowhere.yaml does not exist"),
    ],
)
def test_unsupported_or_broken_kustomizations_are_refused(
    tmp_path: Path, spec: dict[str, Any], complaint: str
) -> None:
    overlay = _overlay(tmp_path, **spec)
    with pytest.raises(KustomizeError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        render_kustomization(overlay)


def test_a_patch_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path, patches=[{"path": "patch.yaml"}])
    _write(
        overlay,
        "patch.yaml",
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}},
    )
    with pytest.raises(KustomizeError, match="matches no resource"):
        render_kustomization(overlay)


def test_a_json_patch_on_a_missing_path_is_an_error(tmp_path: Path) -> None:
    overlay = _overlay(tmp_path, patches=[{"path": "ops.yaml", "target": {"kind": "ScaledObject"}}])
    (overlay / "ops.yaml").write_text(
        yaml.safe_dump([{"op": "add", "path": "/spec/triggers/3/metadata/tls", "value": "enable"}])
    )
    with pytest.raises(KustomizeError, match="does not exist"):
        render_kustomization(overlay)


@pytest.mark.parametrize("root", ["k8s/base", "k8s/overlays/production"])
def test_renders_what_kubectl_kustomize_renders(root: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: nothing to compare the renderer with")
    directory = default_deploy_dir() / root
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    def key(obj: dict[str, Any]) -> tuple[str, str, str]:
        return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]

    theirs = {key(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {key(o): o for o in render_kustomization(directory)}
    assert sorted(ours) == sorted(theirs)
    for name, obj in ours.items():
        assert obj == theirs[name], name
