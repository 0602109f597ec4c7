"""Grafana: every panel has a query, ids are unique, the grid does not overlap, every
query names only exported series (and, with promtool, parses as PromQL), and the
provisioning points at the mounted dashboards."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devtools.deploy.metric_names import ExportedMetrics
from devtools.deploy.promql import check_references, promql_syntax_errors
from devtools.deploy.report import CheckReport, load_yaml, relative


def check_grafana(
    deploy_dir: Path,
    report: CheckReport,
    metrics: ExportedMetrics,
    recorded: set[str],
    promtool: str | None = None,
) -> None:
    """Check every ``grafana/dashboards/*.json`` and the provisioning; with ``promtool``,
    every query must also parse as PromQL."""
    grafana = deploy_dir / "grafana"
    dashboards = sorted((grafana / "dashboards").glob("*.json"))
    if not dashboards:
        report.error("grafana", relative(grafana, deploy_dir), "no dashboards/*.json")
    for path in dashboards:
        subject = relative(path, deploy_dir)
        dashboard = json.loads(path.read_text())
        for key in ("uid", "title", "panels"):
            if not dashboard.get(key):
                report.error("grafana", subject, f"dashboard has no {key}")
        panels = list(_panels(dashboard.get("panels", [])))
        exprs: list[str] = []
        ids: set[object] = set()
        boxes: list[tuple[str, int, int, int, int]] = []
        for panel in panels:
            title = panel.get("title", "?")
            if panel.get("id") in ids:
                report.error("grafana", subject, f"panel id {panel.get('id')} is used twice")
            ids.add(panel.get("id"))
            grid = panel.get("gridPos", {})
            x, y, w, h = (int(grid.get(k, -1)) for k in ("x", "y", "w", "h"))
            if min(x, y, w, h) < 0 or x + w > 24:
                report.error("grafana", subject, f"panel {title!r}: gridPos {grid} is off the grid")
            boxes.append((title, x, y, w, h))
            if panel.get("type") == "row":
                continue
            targets = panel.get("targets", [])
            queries = [str(t.get("expr", "")).strip() for t in targets]
            if not queries or not all(queries):
                report.error("grafana", subject, f"panel {title!r} has a target without a query")
            ref_ids = [t.get("refId") for t in targets]
            if len(set(ref_ids)) != len(ref_ids):
                report.error("grafana", subject, f"panel {title!r} repeats a refId")
            exprs.extend(queries)
        for a_index, (a, ax, ay, aw, ah) in enumerate(boxes):
            for b, bx, by, bw, bh in boxes[a_index + 1 :]:
                if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                    report.error("grafana", subject, f"panels {a!r} and {b!r} overlap")
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else str(query or "")
            match = re.match(r"\s*label_values\(\s*([^,]+?)\s*,", text)
            if variable.get("type") == "query" and match:
                exprs.append(match.group(1))
        checked = check_references(report, "grafana", subject, exprs, metrics, recorded)
        if promtool is not None:
            problem = promql_syntax_errors(exprs, promtool)
            if problem:
                report.error("grafana", subject, f"a query is not valid PromQL:\n{problem}")
            else:
                report.ok_("promtool", subject, f"{len(exprs)} queries parse (promtool)")
        report.ok_(
            "grafana",
            subject,
            f"{len(panels)} panels; {checked} metric references checked against the code",
        )
    _check_grafana_provisioning(deploy_dir, report)


def _panels(panels: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _check_grafana_provisioning(deploy_dir: Path, report: CheckReport) -> None:
    provisioning = deploy_dir / "grafana" / "provisioning"
    sources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.y*ml"))
        for source in (load_yaml(path.read_text()) or {}).get("datasources", [])
    ]
    if not any(s.get("type") == "prometheus" and s.get("url") for s in sources):
        report.error("grafana", "provisioning/datasources", "no Prometheus data source with a url")
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in (load_yaml(path.read_text()) or {}).get("providers", [])
    ]
    paths = {
        str(p.get("options", {}).get("path", "")) for p in providers if p.get("type") == "file"
    }
    if not paths:
        report.error("grafana", "provisioning/dashboards", "no file provider for the dashboards")
    report.ok_(
        "grafana", "provisioning", f"{len(sources)} data source(s), providers at {sorted(paths)}"
    )
