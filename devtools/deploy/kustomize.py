"""Kustomizations rendered by ``kubectl kustomize`` — the tool itself, not a copy of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from devtools.deploy.report import load_yaml_all
from runtime.errors import SidestreamError


class KustomizeError(SidestreamError):
    """``kubectl kustomize`` refused a kustomization; the message is kubectl's own."""


def render_kustomization(directory: Path, kubectl: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders.

    Raises:
        KustomizeError: kubectl failed (a patch matching nothing, a missing file, ...).
    """
    try:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KustomizeError(f"cannot run {kubectl} kustomize: {exc}") from exc
    if result.returncode != 0:
        raise KustomizeError(
            _kubectl_message(result.stderr) or f"kubectl exited {result.returncode}"
        )
    try:
        return [obj for obj in load_yaml_all(result.stdout) if isinstance(obj, dict)]
    except yaml.YAMLError as exc:
        raise KustomizeError(f"kubectl kustomize printed unparsable YAML: {exc}") from exc


# kubectl logs through klog: `E1202 07:12:09.5 29675 run.go:72] "command failed" err="..."`.
_KLOG_ERROR = re.compile(r'err="((?:[^"\\]|\\.)*)"')


def _kubectl_message(stderr: str) -> str:
    """kubectl's error without klog's timestamp, PID and source-line prefix."""
    match = _KLOG_ERROR.search(stderr)
    if match is None:
        return stderr.strip()
    return match.group(1).replace('\\"', '"')
