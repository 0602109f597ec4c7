"""PromQL references: which metric and recording-rule names an expression selects.

Syntax is promtool's business (``promtool check rules`` parses every rule and, through
a generated rule file, every dashboard query); this module only needs the names, to
hold them against what the code exports.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from devtools.deploy.metric_names import ExportedMetrics
from devtools.deploy.report import CheckReport

_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_PROMQL_BRACES = re.compile(r"\{[^{}]*\}")
_PROMQL_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_PROMQL_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_PROMQL_TOKEN = re.compile(r"[0-9][0-9A-Za-z_.]*|[A-Za-z_:][A-Za-z0-9_:]*")
_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)


def promql_metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects.

    Label matchers, ranges, grouping labels, strings, numbers, functions, keywords and
    Grafana variables (``$__rate_interval``, ``${sink}``) are not names.
    """
    text = _PROMQL_STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("0", text)
    text = _PROMQL_BRACES.sub(" ", text)
    text = _PROMQL_BRACKETS.sub(" ", text)
    text = _PROMQL_GROUPING.sub(" ", text)
    names: set[str] = set()
    for match in _PROMQL_TOKEN.finditer(text):
        token = match.group()
        if token[0].isdigit() or token.lower() in _PROMQL_KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        names.add(token)
    return names


def check_references(
    report: CheckReport,
    check: str,
    subject: str,
    exprs: Iterable[str],
    metrics: ExportedMetrics,
    recorded: set[str],
) -> int:
    """Report every name in ``exprs`` that the code does not export (with the closest
    one it does) or that no recording rule defines; return how many were checked."""
    count = 0
    for expr in exprs:
        for name in sorted(promql_metric_names(expr)):
            count += 1
            if ":" in name:
                if name not in recorded:
                    report.error(check, subject, f"recording rule {name} is not defined")
            elif not metrics.knows(name):
                hint = _closest(name, metrics.series)
                report.error(
                    check,
                    subject,
                    f"metric {name} is not exported by the code{hint} (query: {expr.strip()})",
                )
    return count


def _closest(name: str, candidates: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {match[0]}?" if match else ""


# Grafana's interval variables stand where PromQL wants a duration; a value that parses.
_GRAFANA_DURATION = re.compile(
    r"\$__(?:rate_interval|interval|range)\b|\$\{__(?:rate_interval|interval|range)\}"
)


def promql_syntax_errors(exprs: Iterable[str], promtool: str) -> str | None:
    """promtool's verdict on ``exprs`` as PromQL (Grafana variables substituted): ``None``
    when every one parses, else promtool's own message.

    promtool has no "parse this expression" command in every release, so each query
    becomes a recording rule of a scratch rule file for ``promtool check rules``.
    """
    rules = [
        {"record": f"grafana:query_{index}:check", "expr": _GRAFANA_DURATION.sub("5m", expr)}
        for index, expr in enumerate(exprs)
    ]
    if not rules:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "dashboard-queries.rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = subprocess.run(
            [promtool, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip()
