"""Metric names: the families the code exports, read statically from its source.

Rules and dashboards may only name series the code exports (or that Prometheus and
the client library add on their own), so a rename on either side fails the check.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Packages whose source is scanned for the metrics they export.
CODE_PACKAGES = ("runtime", "schemas", "producers", "consumers", "services", "sidestream")

#: Series Prometheus or the client library adds on its own, not declared in our code:
#: ``up`` and ``scrape_*`` come from the scrape, ``process_*``/``python_*`` from the
#: default registry's collectors, ``faust_*`` from faust's sensor (live analytics).
EXTERNAL_METRICS = frozenset({"up"})
EXTERNAL_PREFIXES = ("scrape_", "process_", "python_", "faust_")

# Series names a metric family is exposed as, by type (prometheus_client 0.2x).
_EXPOSITION_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


@dataclass(frozen=True, slots=True)
class ExportedMetrics:
    """Metric families declared in the code, and the series names they expose."""

    families: Mapping[str, str]
    """Family name (``sidestream_consumer_records``) → type (``Counter``)."""
    unresolved: tuple[str, ...] = ()
    """Declarations whose name could not be read statically (``file:line``)."""
    duplicates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Families declared in more than one module (name → ``file:line`` of each)."""

    @property
    def series(self) -> frozenset[str]:
        return frozenset(
            family + suffix
            for family, kind in self.families.items()
            for suffix in _EXPOSITION_SUFFIXES[kind]
        )

    def knows(self, name: str) -> bool:
        """True if ``name`` is a series the code exports, or one Prometheus adds."""
        return name in self.series or name in EXTERNAL_METRICS or name.startswith(EXTERNAL_PREFIXES)


def exported_metrics(package_dirs: Iterable[Path] | None = None) -> ExportedMetrics:
    """Read every ``Counter``/``Gauge``/``Histogram``/``Summary`` of ``prometheus_client``
    declared in the source of ``package_dirs`` (default: the platform's packages).

    Names are string literals, or f-strings built from a parameter of the enclosing
    function whose call sites pass literals (``counter("hits", ...)`` building
    ``f"sidestream_cache_{name}"``); anything else is listed as unresolved.
    """
    if package_dirs is None:
        package_dirs = [_package_dir(name) for name in CODE_PACKAGES]
    families: dict[str, str] = {}
    places: dict[str, list[str]] = {}
    unresolved: list[str] = []
    for directory in package_dirs:
        for path in sorted(directory.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            scanner = _MetricScanner(tree)
            scanner.visit(tree)
            families.update(scanner.families)
            for name, line in scanner.lines.items():
                places.setdefault(name, []).append(f"{path}:{line}")
            unresolved.extend(f"{path}:{line}" for line in scanner.unresolved)
    duplicates = {name: tuple(where) for name, where in places.items() if len(where) > 1}
    return ExportedMetrics(families=families, unresolved=tuple(unresolved), duplicates=duplicates)


def _package_dir(name: str) -> Path:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    return Path(module.__file__).parent


class _MetricScanner(ast.NodeVisitor):
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.families: dict[str, str] = {}
        self.lines: dict[str, int] = {}
        self.unresolved: list[int] = []
        self._types: dict[str, str] = {}  # local name → prometheus_client type
        self._modules: set[str] = set()  # local names of the prometheus_client module
        self._functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "prometheus_client"
            ):
                for alias in node.names:
                    if alias.name in _EXPOSITION_SUFFIXES:
                        self._types[alias.asname or alias.name] = alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "prometheus_client":
                        self._modules.add(alias.asname or alias.name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._functions.append(node)
        self.generic_visit(node)
        self._functions.pop()

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._functions.append(node)
        self.generic_visit(node)
        self._functions.pop()

    def visit_Call(self, node: ast.Call) -> None:
        kind = self._kind(node.func)
        if kind is not None:
            name_node = node.args[0] if node.args else _keyword(node, "name")
            if name_node is not None:
                names = self._names(name_node)
                if names:
                    prefix = "_".join(
                        value
                        for value in (
                            _literal(_keyword(node, "namespace")),
                            _literal(_keyword(node, "subsystem")),
                        )
                        if value
                    )
                    unit = _literal(_keyword(node, "unit"))
                    for name in names:
                        full = f"{prefix}_{name}" if prefix else name
                        if unit and not full.endswith(f"_{unit}"):
                            full = f"{full}_{unit}"
                        if kind == "Counter":
                            full = full.removesuffix("_total")
                        self.families[full] = kind
                        self.lines.setdefault(full, node.lineno)
                else:
                    self.unresolved.append(node.lineno)
        self.generic_visit(node)

    def _kind(self, func: ast.expr) -> str | None:
        if isinstance(func, ast.Name):
            return self._types.get(func.id)
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self._modules
            and func.attr in _EXPOSITION_SUFFIXES
        ):
            return func.attr
        return None

    def _names(self, node: ast.expr) -> list[str]:
        literal = _literal(node)
        if literal is not None:
            return [literal]
        if isinstance(node, ast.JoinedStr) and self._functions:
            return self._resolve_fstring(node, self._functions[-1])
        return []

    def _resolve_fstring(
        self, node: ast.JoinedStr, function: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> list[str]:
        params = [arg.arg for arg in function.args.args]
        used: list[str] = []
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if not isinstance(part.value, ast.Name) or part.value.id not in params:
                    return []
                used.append(part.value.id)
        names: list[str] = []
        for call in ast.walk(self.tree):
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == function.name
            ):
                continue
            values: dict[str, str] = {}
            for param in used:
                index = params.index(param)
                arg = call.args[index] if index < len(call.args) else _keyword(call, param)
                value = _literal(arg) if arg is not None else None
                if value is None:
                    break
                values[param] = value
            else:
                names.append(
                    "".join(
                        values[part.value.id]
                        if isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
                        else str(part.value)
                        if isinstance(part, ast.Constant)
                        else ""
                        for part in node.values
                    )
                )
        return names


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None
