"""Findings of one ``deploy check`` run, and the small helpers every check shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Level = Literal["ok", "warning", "error", "skipped"]

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """One YAML document (libyaml's loader when available: manifests are read often)."""
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def load_yaml_all(text: str) -> list[Any]:
    """Every non-empty document of a YAML stream."""
    return [doc for doc in yaml.load_all(text, Loader=_YAML_LOADER) if doc is not None]


@dataclass(frozen=True, slots=True)
class Finding:
    """One result: ``check`` (area), ``subject`` (file or object), ``message``."""

    level: Level
    check: str
    subject: str
    message: str


@dataclass(slots=True)
class CheckReport:
    """Every finding of one run; :attr:`ok` is False as soon as one is an error."""

    findings: list[Finding] = field(default_factory=list)

    def ok_(self, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding("ok", check, subject, message))

    def warning(self, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding("warning", check, subject, message))

    def error(self, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding("error", check, subject, message))

    def skip(self, check: str, subject: str, message: str) -> None:
        self.findings.append(Finding("skipped", check, subject, message))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def skipped(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.errors


def default_deploy_dir() -> Path:
    """``deploy/`` of the repository this package runs from (an editable install)."""
    return Path(__file__).resolve().parents[2] / "deploy"


def relative(path: Path, root: Path) -> str:
    """``path`` relative to the folder holding ``root`` (``deploy/...``), for messages."""
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)
