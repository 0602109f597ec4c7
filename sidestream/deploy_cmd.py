"""``sidestream deploy check``: validate everything under ``deploy/`` offline
(the checks themselves live in :mod:`devtools.deploy`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from devtools.deploy import AREAS, DEFAULT_KUBERNETES_VERSION, Finding, run_checks
from sidestream.context import console
from sidestream.errors import App

app = App(help="Deployment material (deploy/): offline validation.")


@app.callback()
def deploy() -> None:
    """Deployment material (deploy/): offline validation."""


@app.command("check")
def check(
    deploy_dir: Annotated[
        Path | None, typer.Option(help="The deploy/ folder (default: the repository's).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Check only these areas: parse, prometheus, grafana, compose, kubernetes."
        ),
    ] = None,
    kubernetes_version: Annotated[
        str, typer.Option(help="Kubernetes version to validate manifests against.")
    ] = DEFAULT_KUBERNETES_VERSION,
    require_promtool: Annotated[
        bool, typer.Option(help="Fail, instead of skipping, when promtool is missing (CI).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also list what passed.")
    ] = False,
) -> None:
    """Validate compose, Kubernetes, Prometheus rules and Grafana offline; exit 1 on errors."""
    try:
        report = run_checks(deploy_dir, areas=only or AREAS, kubernetes_version=kubernetes_version)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--only'") from exc
    if require_promtool:
        report.findings = [
            Finding("error", f.check, f.subject, f.message)
            if f.level == "skipped" and f.check == "promtool"
            else f
            for f in report.findings
        ]
    styles = {
        "ok": "[green]ok[/]",
        "warning": "[yellow]warning[/]",
        "error": "[bold red]error[/]",
        "skipped": "[yellow]skipped[/]",
    }
    for finding in report.findings:
        if finding.level == "ok" and not verbose:
            continue
        console.print(
            f"{styles[finding.level]} {finding.check:<11} {finding.subject}: {finding.message}",
            highlight=False,
            soft_wrap=True,
        )
    counts = {level: sum(f.level == level for f in report.findings) for level in styles}
    console.print(
        f"deploy check: {counts['ok']} checks ok, {counts['error']} errors, "
        f"{counts['warning']} warnings, {counts['skipped']} skipped",
        highlight=False,
    )
    if not report.ok:
        raise typer.Exit(code=1)
