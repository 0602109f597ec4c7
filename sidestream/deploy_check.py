"""``sidestream deploy check``: validate everything under ``deploy/`` offline.

No Docker engine, cluster, ``kubectl`` or Grafana is needed. What is checked, and how:

- **YAML/JSON**: every ``*.yml``/``*.yaml``/``*.json`` under ``deploy/`` parses.
- **Kubernetes**: each kustomization (``k8s/base``, ``k8s/overlays/*``) is rendered by
  :func:`render_kustomization` (the subset of kustomize this repository uses: resources,
  namespace, labels, images, strategic-merge and JSON 6902 patches; anything else is
  refused, never ignored). Built-in kinds are validated with ``kubernetes-validate``
  (strict: unknown fields fail) against one Kubernetes version; KEDA's ``ScaledObject``
  and ``TriggerAuthentication`` are checked against the fields KEDA documents (and the
  HPA ``behavior`` inside with the real ``autoscaling/v2`` schema). Then cross-checks
  with the code: every worker of ``sidestream worker run`` is deployed, probes hit
  ``/healthz``/``/readyz`` on the metrics port, ``terminationGracePeriodSeconds`` exceeds
  the drain deadline, each Kafka worker has a ``ScaledObject`` on its real consumer
  group and topics (``maxReplicaCount`` at most the partitions), and the ConfigMap plus
  Secret build a valid :class:`runtime.Settings`.
- **Compose**: structural checks (the compose-spec JSON schema is not available offline
  from any installed package): known service keys, image or build, ``depends_on``
  targets and conditions, ports, bind-mount sources, named volumes, healthchecks, grace
  periods, ``SIDESTREAM_*`` settings, and that Prometheus scrapes every service.
- **Grafana**: every panel has a query, ids are unique, the grid does not overlap, and
  the provisioning points at the mounted dashboards.
- **Prometheus**: ``promtool check config``, ``promtool check rules`` and ``promtool test
  rules`` (skipped, with the reason, when promtool is missing), and every alert has a
  firing and a quiet unit test.
- **Metric names**: every metric named in a rule or a dashboard query is exported by the
  code — found by reading the source (``Counter("name", ...)`` etc.), so a rename on
  either side fails here.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from runtime import ConfigError, Settings, load_settings
from runtime.settings import ENV_PREFIX
from sidestream.context import console

__all__ = [
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

#: The Kubernetes version manifests are validated against (kubernetes-validate's schemas).
DEFAULT_KUBERNETES_VERSION = "1.33"

#: Packages whose source is scanned for the metrics they export.
CODE_PACKAGES = ("runtime", "schemas", "producers", "consumers", "services", "sidestream")

#: Series Prometheus or the client library adds on its own, not declared in our code:
#: ``up`` and ``scrape_*`` come from the scrape, ``process_*``/``python_*`` from the
#: default registry's collectors, ``faust_*`` from faust's sensor (live analytics).
EXTERNAL_METRICS = frozenset({"up"})
EXTERNAL_PREFIXES = ("scrape_", "process_", "python_", "faust_")

Level = Literal["ok", "warning", "error", "skipped"]

#: The areas :func:`run_checks` covers, in order.
AREAS = ("parse", "prometheus", "grafana", "compose", "kubernetes")

_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(text: str) -> Any:
    # libyaml's loader when available: the manifests are parsed several times per run.
    return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def _yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.load_all(text, Loader=_YAML_LOADER) if doc is not None]


# --------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------


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
    return Path(__file__).resolve().parents[1] / "deploy"


# --------------------------------------------------------------------------------------
# Metric names: exported by the code, used by rules and dashboards
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# A kustomize subset
# --------------------------------------------------------------------------------------


class KustomizeError(ValueError):
    """A kustomization uses something the renderer does not support, or is broken."""


_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED_KUSTOMIZE_KEYS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
)
_CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "ClusterTriggerAuthentication",
    }
)
_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"})
# Lists that strategic merge patches merge by a key (Kubernetes' patchMergeKey); other
# lists are replaced, as kustomize does for kinds it has no schema for (CRDs).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
_BUILTIN_GROUPS = frozenset(
    {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}
)


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    """Render ``directory``'s kustomization like ``kubectl kustomize`` would, for the
    subset used here: ``resources`` (files and directories), ``patches`` (strategic
    merge, or JSON 6902 with a ``target``), ``namespace``, ``labels`` and ``images``.

    Raises:
        KustomizeError: an unsupported field or directive, a patch matching nothing,
            a missing file.
    """
    kfile = next((directory / n for n in _KUSTOMIZATION_FILES if (directory / n).exists()), None)
    if kfile is None:
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = _yaml(kfile.read_text()) or {}
    unsupported = sorted(set(spec) - _SUPPORTED_KUSTOMIZE_KEYS)
    if unsupported:
        raise KustomizeError(
            f"{kfile}: unsupported kustomize field(s) {', '.join(unsupported)}; "
            "extend sidestream.deploy_check.render_kustomization or keep to "
            f"{', '.join(sorted(_SUPPORTED_KUSTOMIZE_KEYS - {'apiVersion', 'kind'}))}"
        )
    objects: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render_kustomization(path))
        elif path.is_file():
            objects.extend(_yaml_all(path.read_text()))
        else:
            raise KustomizeError(f"{kfile}: resource {entry} does not exist")
    for patch in spec.get("patches", []):
        _apply_patch(objects, patch, directory, kfile)
    namespace = spec.get("namespace")
    if namespace:
        for obj in objects:
            if obj.get("kind") not in _CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = namespace
    for label_set in spec.get("labels", []):
        _apply_labels(objects, label_set, kfile)
    for image in spec.get("images", []):
        _apply_image(objects, image)
    return objects


def _apply_patch(
    objects: list[dict[str, Any]], patch: Mapping[str, Any], directory: Path, kfile: Path
) -> None:
    unknown = sorted(set(patch) - {"path", "patch", "target"})
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported patch field(s) {', '.join(unknown)}")
    if "path" in patch:
        source = directory / patch["path"]
        if not source.is_file():
            raise KustomizeError(f"{kfile}: patch {patch['path']} does not exist")
        body = _yaml(source.read_text())
        where = str(patch["path"])
    else:
        body = _yaml(patch["patch"])
        where = "inline patch"
    target = patch.get("target")
    if isinstance(body, list):
        if target is None:
            raise KustomizeError(f"{kfile}: JSON 6902 patch {where} needs a target")
        matched = [obj for obj in objects if _matches(obj, target)]
        for obj in matched:
            _json_patch(obj, body, where)
    elif isinstance(body, dict):
        if target is None:
            target = {
                "kind": body.get("kind"),
                "name": body.get("metadata", {}).get("name"),
            }
        matched = [obj for obj in objects if _matches(obj, target)]
        for obj in matched:
            _strategic_merge(obj, body, where, builtin=_group(obj) in _BUILTIN_GROUPS)
    else:
        raise KustomizeError(f"{kfile}: patch {where} is neither a mapping nor a list")
    if not matched:
        raise KustomizeError(f"{kfile}: patch {where} matches no resource ({target})")


def _group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _matches(obj: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    unsupported = sorted(set(target) - {"group", "version", "kind", "name", "namespace"})
    if unsupported:
        raise KustomizeError(f"unsupported patch target field(s) {', '.join(unsupported)}")
    api_version = str(obj.get("apiVersion", ""))
    version = api_version.rpartition("/")[2]
    metadata = obj.get("metadata", {})
    checks = {
        "group": _group(obj),
        "version": version,
        "kind": obj.get("kind"),
        "namespace": metadata.get("namespace"),
    }
    for key, actual in checks.items():
        if key in target and target[key] is not None and target[key] != actual:
            return False
    name = target.get("name")
    # kustomize matches target names as anchored regular expressions.
    return name is None or re.fullmatch(str(name), str(metadata.get("name", ""))) is not None


def _strategic_merge(
    target: dict[str, Any], patch: Mapping[str, Any], where: str, *, builtin: bool
) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{where}: unsupported strategic merge directive {key}")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _strategic_merge(target[key], value, where, builtin=builtin)
        elif (
            builtin
            and isinstance(value, list)
            and isinstance(target.get(key), list)
            and _merge_key(key, value) is not None
        ):
            merge_key = _merge_key(key, value)
            assert merge_key is not None
            merged = target[key]
            for item in value:
                existing = next(
                    (old for old in merged if old.get(merge_key) == item.get(merge_key)), None
                )
                if existing is None:
                    merged.append(copy.deepcopy(item))
                else:
                    _strategic_merge(existing, item, where, builtin=builtin)
        else:
            target[key] = copy.deepcopy(value)


def _merge_key(field_name: str, items: list[Any]) -> str | None:
    if not all(isinstance(item, dict) for item in items):
        return None
    if field_name == "ports":
        return "containerPort" if all("containerPort" in i for i in items) else "port"
    return _MERGE_KEYS.get(field_name)


def _json_patch(obj: dict[str, Any], operations: list[Any], where: str) -> None:
    for operation in operations:
        op, path = operation.get("op"), operation.get("path", "")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if not parts:
            raise KustomizeError(f"{where}: JSON patch path {path!r} is empty")
        parent: Any = obj
        try:
            for part in parts[:-1]:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        except (KeyError, IndexError, ValueError) as exc:
            raise KustomizeError(f"{where}: {path} does not exist in {_describe(obj)}") from exc
        last = parts[-1]
        if op in ("add", "replace"):
            value = copy.deepcopy(operation["value"])
            if isinstance(parent, list):
                if last == "-":
                    parent.append(value)
                elif op == "add":
                    parent.insert(int(last), value)
                else:
                    parent[int(last)] = value
            else:
                if op == "replace" and last not in parent:
                    raise KustomizeError(f"{where}: replace {path}: no such field")
                parent[last] = value
        elif op == "remove":
            try:
                del parent[int(last) if isinstance(parent, list) else last]
            except (KeyError, IndexError) as exc:
                raise KustomizeError(f"{where}: remove {path}: no such field") from exc
        else:
            raise KustomizeError(f"{where}: unsupported JSON patch op {op!r}")


def _apply_labels(objects: list[dict[str, Any]], label_set: Mapping[str, Any], kfile: Path) -> None:
    unknown = sorted(set(label_set) - {"pairs", "includeSelectors", "includeTemplates"})
    if unknown or label_set.get("includeSelectors"):
        raise KustomizeError(
            f"{kfile}: labels supports pairs and includeTemplates only (selectors are immutable)"
        )
    pairs = {str(k): str(v) for k, v in label_set.get("pairs", {}).items()}
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
        if label_set.get("includeTemplates") and obj.get("kind") in _POD_TEMPLATE_KINDS:
            template = obj.setdefault("spec", {}).setdefault("template", {})
            template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _apply_image(objects: list[dict[str, Any]], image: Mapping[str, Any]) -> None:
    unknown = sorted(set(image) - {"name", "newName", "newTag", "digest"})
    if unknown:
        raise KustomizeError(f"unsupported images field(s) {', '.join(unknown)}")
    for container in _containers(objects):
        name, tag = _split_image(str(container.get("image", "")))
        if name != image["name"]:
            continue
        new_name = image.get("newName", name)
        if "digest" in image:
            container["image"] = f"{new_name}@{image['digest']}"
        else:
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        return image.split("@", 1)[0], None
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, None


def _pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") not in _POD_TEMPLATE_KINDS:
        return None
    spec = obj.get("spec", {}).get("template", {}).get("spec")
    return spec if isinstance(spec, dict) else None


def _containers(objects: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    for obj in objects:
        pod = _pod_spec(obj)
        if pod is not None:
            yield from pod.get("initContainers", [])
            yield from pod.get("containers", [])


def _describe(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------------------------
# What the code says the deployment must contain
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaConsumer:
    """A worker reading Kafka: its consumer group and topics (with partitions)."""

    group: str
    topics: Mapping[str, int]


def kafka_consumers() -> dict[str, KafkaConsumer]:
    """Every Kafka-consuming worker, by ``sidestream worker run`` name, from the code."""
    from consumers import SINKS, group_id_for
    from consumers.live_analytics import LiveAnalyticsOptions, resolve_topics
    from schemas import EntityChanged
    from schemas.topics import load_topics, topic_for
    from services.invalidation import SINK_NAME as INVALIDATION

    partitions = {spec.name: spec.partitions for spec in load_topics()}
    found = {
        name: KafkaConsumer(group_id_for(name), {topic_for(factory().event_type): 0})
        for name, factory in SINKS.items()
    }
    found[INVALIDATION] = KafkaConsumer(group_id_for(INVALIDATION), {topic_for(EntityChanged): 0})
    live = LiveAnalyticsOptions()
    sources, _alerts = resolve_topics(live)
    found["live-analytics"] = KafkaConsumer(live.app_id, dict.fromkeys(sources, 0))
    return {
        name: KafkaConsumer(c.group, {t: partitions.get(t, 0) for t in c.topics})
        for name, c in found.items()
    }


def cli_workers() -> set[str]:
    """The worker names ``sidestream worker run`` accepts today."""
    from sidestream.worker import WORKERS

    return set(WORKERS)


def _api_drain_seconds() -> float:
    from services.api.server import GRACEFUL_SHUTDOWN_S

    return float(GRACEFUL_SHUTDOWN_S)


#: Every process the deployments run: the API and each worker (compose service and
#: ``sidestream-<name>`` Deployment). A new worker in the CLI must be added here too.
DEPLOYED_WORKERS = (
    "audit",
    "analytics",
    "notifications",
    "invalidation",
    "live-analytics",
    "notify",
    "outbox-relay",
)


def _command(container: Mapping[str, Any]) -> list[str]:
    command = [str(c) for c in container.get("command", []) or []]
    args = [str(a) for a in container.get("args", []) or []]
    if command[:2] == ["sh", "-c"]:
        return " ".join(command[2:] + args).split()
    return (command or ["sidestream"]) + args


def _role(argv: list[str]) -> str | None:
    """``worker:<name>`` or ``api`` for a sidestream command line, else None."""
    words = argv[1:] if argv and argv[0] == "sidestream" else argv
    if words[:2] == ["worker", "run"] and len(words) > 2:
        return f"worker:{words[2]}"
    if words[:1] == ["api"]:
        return "api"
    return None


def _option(argv: list[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


class _DeclaredSettings(Settings):
    """The deployment's values over the defaults, never this machine's environment or
    ``.env`` (which a plain :class:`Settings` would also read)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@functools.lru_cache(maxsize=256)
def _declared_settings(items: tuple[tuple[str, str], ...]) -> Settings | str:
    environ = dict(items)
    try:
        # The runtime's own check first: unknown variables get its message and hint.
        load_settings(environ=environ)
        return _DeclaredSettings.model_validate(
            {key[len(ENV_PREFIX) :].lower(): value for key, value in environ.items()}
        )
    except ConfigError as exc:
        return str(exc)
    except ValidationError as exc:
        return f"invalid settings: {exc.errors()[0]['msg']}"


def _settings(environ: Mapping[str, str]) -> Settings | str:
    """The settings a process with ``environ`` would run with, or why it would not start."""
    return _declared_settings(tuple(sorted((k, str(v)) for k, v in environ.items())))


def _settings_problem(environ: Mapping[str, str]) -> str | None:
    result = _settings(environ)
    return result if isinstance(result, str) else None


def _valid_settings(environ: Mapping[str, str]) -> Settings:
    result = _settings(environ)
    assert not isinstance(result, str), result  # callers check _settings_problem first
    return result


def _shutdown_deadline(environ: Mapping[str, str]) -> float:
    return _valid_settings(environ).consumer_shutdown_deadline_s


def _metrics_port(environ: Mapping[str, str]) -> int:
    return _valid_settings(environ).metrics_port


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def run_checks(
    deploy_dir: Path | None = None,
    *,
    areas: Iterable[str] = AREAS,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    promtool: str | None = "auto",
    kubectl: str | None = "auto",
    metrics: ExportedMetrics | None = None,
) -> CheckReport:
    """Run the checks of ``areas`` (default: all of :data:`AREAS`) on ``deploy_dir``
    (default: the repository's ``deploy/``).

    ``promtool``/``kubectl``: the binaries; ``"auto"`` finds them on PATH, ``None`` does
    without. Checks that need a missing binary are reported as skipped, with the reason.
    ``kubectl`` is optional: where present, ``kubectl kustomize`` must render exactly
    what :func:`render_kustomization` renders. ``metrics``: what the code exports
    (default: :func:`exported_metrics`, read once per process).
    """
    wanted = set(areas)
    unknown = wanted - set(AREAS)
    if unknown:
        raise ValueError(f"unknown area(s) {sorted(unknown)}; choose from {', '.join(AREAS)}")
    deploy_dir = deploy_dir or default_deploy_dir()
    if promtool == "auto":
        promtool = shutil.which("promtool")
    if kubectl == "auto":
        kubectl = shutil.which("kubectl")
    report = CheckReport()
    metrics = metrics or _code_metrics()
    if metrics.unresolved:
        report.skip(
            "metrics",
            "code",
            "metric names not readable statically (not checked against): "
            + ", ".join(metrics.unresolved),
        )
    for name, places in sorted(metrics.duplicates.items()):
        report.warning(
            "metrics", "code", f"{name} is declared in several places: {', '.join(places)}"
        )
    report.ok_("metrics", "code", f"{len(metrics.families)} metric families exported")
    if "parse" in wanted:
        _check_parse(deploy_dir, report)
    recorded: set[str] = set()
    if wanted & {"prometheus", "grafana"}:
        recorded = _check_prometheus(
            deploy_dir,
            report,
            metrics,
            promtool if "prometheus" in wanted else None,
            quiet="prometheus" not in wanted,
        )
    if "grafana" in wanted:
        _check_grafana(deploy_dir, report, metrics, recorded)
    if "compose" in wanted:
        _check_compose(deploy_dir, report)
    if "kubernetes" in wanted:
        _check_kubernetes(deploy_dir, report, kubernetes_version, kubectl)
    return report


@functools.cache
def _code_metrics() -> ExportedMetrics:
    return exported_metrics()


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.parent))
    except ValueError:
        return str(path)


def _check_parse(deploy_dir: Path, report: CheckReport) -> None:
    count = 0
    for path in sorted(deploy_dir.rglob("*")):
        if path.suffix not in (".yml", ".yaml", ".json") or not path.is_file():
            continue
        count += 1
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            else:
                _yaml_all(path.read_text())
        except (yaml.YAMLError, json.JSONDecodeError) as exc:
            report.error("parse", _rel(path, deploy_dir), f"does not parse: {exc}")
    report.ok_("parse", str(deploy_dir.name), f"{count} YAML/JSON files read")


def _check_metric_names(
    report: CheckReport,
    check: str,
    subject: str,
    exprs: Iterable[str],
    metrics: ExportedMetrics,
    recorded: set[str],
) -> int:
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
    import difflib

    match = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {match[0]}?" if match else ""


# --- Prometheus ------------------------------------------------------------------------


def _check_prometheus(
    deploy_dir: Path,
    report: CheckReport,
    metrics: ExportedMetrics,
    promtool: str | None,
    *,
    quiet: bool = False,
) -> set[str]:
    """Check the rules (and return the recording rule names); with ``quiet``, only
    collect the names (the Grafana check needs them)."""
    if quiet:
        report = CheckReport()
    prom_dir = deploy_dir / "prometheus"
    rule_files = sorted((prom_dir / "rules").glob("*.rules.yml"))
    test_files = sorted((prom_dir / "rules").glob("*.test.yml"))
    recorded: set[str] = set()
    alerts: set[str] = set()
    exprs: list[tuple[str, str]] = []
    if not rule_files:
        report.error("prometheus", _rel(prom_dir, deploy_dir), "no rules/*.rules.yml")
    for path in rule_files:
        document = _yaml(path.read_text()) or {}
        for group in document.get("groups", []):
            for rule in group.get("rules", []):
                if "record" in rule:
                    recorded.add(rule["record"])
                if "alert" in rule:
                    alerts.add(rule["alert"])
                exprs.append((_rel(path, deploy_dir), str(rule.get("expr", ""))))
    checked = 0
    for subject, expr in exprs:
        checked += _check_metric_names(report, "prometheus", subject, [expr], metrics, recorded)
    report.ok_(
        "prometheus",
        "rules",
        f"{len(recorded)} recording and {len(alerts)} alerting rules; "
        f"{checked} metric references checked against the code",
    )
    _check_rule_test_coverage(deploy_dir, report, alerts, test_files)
    if promtool is None and quiet:
        return recorded
    if promtool is None:
        report.skip(
            "promtool",
            "prometheus",
            "promtool not found: install it with deploy/install-tools.sh "
            "(Debian's prometheus package); config/rules syntax and rule unit tests not run",
        )
        return recorded
    configs = sorted(p.name for p in prom_dir.glob("prometheus*.yml"))
    runs: list[tuple[str, list[str]]] = [
        *((f"check config {c}", [promtool, "check", "config", c]) for c in configs),
        (
            "check rules",
            [promtool, "check", "rules", *(str(p.relative_to(prom_dir)) for p in rule_files)],
        ),
        (
            "test rules",
            [promtool, "test", "rules", *(str(p.relative_to(prom_dir)) for p in test_files)],
        ),
    ]
    for label, argv in runs:
        # promtool resolves rule_files relative to the file: run it from deploy/prometheus.
        result = subprocess.run(
            argv, cwd=prom_dir, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode == 0:
            report.ok_("promtool", f"promtool {label}", "passed")
        elif "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
            # Debian builds Prometheus without the Kubernetes discovery (its Go
            # dependencies): check everything else, with the discovery swapped out.
            result = _check_config_without_kubernetes_sd(promtool, prom_dir / argv[-1])
            if result.returncode == 0:
                report.ok_(
                    "promtool",
                    f"promtool {label}",
                    "passed, with kubernetes_sd_configs replaced by an empty static list "
                    "(this promtool has no Kubernetes discovery)",
                )
            else:
                output = (result.stdout + result.stderr).strip()
                report.error("promtool", f"promtool {label}", f"failed:\n{output}")
        else:
            output = (result.stdout + result.stderr).strip()
            report.error("promtool", f"promtool {label}", f"failed:\n{output}")
    return recorded


def _check_config_without_kubernetes_sd(
    promtool: str, config_path: Path
) -> subprocess.CompletedProcess[str]:
    config = _yaml(config_path.read_text()) or {}
    config["rule_files"] = [
        str((config_path.parent / pattern).resolve()) for pattern in config.get("rule_files", [])
    ]
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job.setdefault("static_configs", [{"targets": []}])
    with tempfile.TemporaryDirectory() as scratch:
        copy_path = Path(scratch) / config_path.name
        copy_path.write_text(yaml.safe_dump(config))
        return subprocess.run(
            [promtool, "check", "config", str(copy_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _check_rule_test_coverage(
    deploy_dir: Path, report: CheckReport, alerts: set[str], test_files: list[Path]
) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in test_files:
        document = _yaml(path.read_text()) or {}
        for test in document.get("tests", []):
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case.get("alertname"))
    for alert in sorted(alerts):
        missing = [
            kind for kind, seen in (("firing", firing), ("quiet", quiet)) if alert not in seen
        ]
        if missing:
            report.error(
                "prometheus",
                "rules/*.test.yml",
                f"alert {alert} has no {' and no '.join(missing)} unit test case",
            )
    unknown = (firing | quiet) - alerts
    for alert in sorted(unknown):
        report.error("prometheus", "rules/*.test.yml", f"tests name unknown alert {alert}")
    report.ok_("prometheus", "rule tests", f"{len(alerts)} alerts each tested firing and quiet")


# --- Grafana ---------------------------------------------------------------------------


def _check_grafana(
    deploy_dir: Path, report: CheckReport, metrics: ExportedMetrics, recorded: set[str]
) -> None:
    grafana = deploy_dir / "grafana"
    dashboards = sorted((grafana / "dashboards").glob("*.json"))
    if not dashboards:
        report.error("grafana", _rel(grafana, deploy_dir), "no dashboards/*.json")
    for path in dashboards:
        subject = _rel(path, deploy_dir)
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
        checked = _check_metric_names(report, "grafana", subject, exprs, metrics, recorded)
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
        for source in (_yaml(path.read_text()) or {}).get("datasources", [])
    ]
    if not any(s.get("type") == "prometheus" and s.get("url") for s in sources):
        report.error("grafana", "provisioning/datasources", "no Prometheus data source with a url")
    providers = [
        provider
        for path in sorted((provisioning / "dashboards").glob("*.y*ml"))
        for provider in (_yaml(path.read_text()) or {}).get("providers", [])
    ]
    paths = {
        str(p.get("options", {}).get("path", "")) for p in providers if p.get("type") == "file"
    }
    if not paths:
        report.error("grafana", "provisioning/dashboards", "no file provider for the dashboards")
    report.ok_(
        "grafana", "provisioning", f"{len(sources)} data source(s), providers at {sorted(paths)}"
    )


# --- Compose ---------------------------------------------------------------------------

_COMPOSE_TOP_LEVEL = frozenset(
    {"version", "name", "services", "networks", "volumes", "configs", "secrets", "include"}
)
_COMPOSE_SERVICE_KEYS = frozenset(
    {
        "annotations", "attach", "build", "cap_add", "cap_drop", "cgroup", "command",
        "configs", "container_name", "cpu_count", "cpu_shares", "cpus", "depends_on",
        "deploy", "develop", "devices", "dns", "entrypoint", "env_file", "environment",
        "expose", "extends", "extra_hosts", "group_add", "healthcheck", "hostname",
        "image", "init", "ipc", "labels", "links", "logging", "mem_limit",
        "mem_reservation", "network_mode", "networks", "oom_score_adj", "pid",
        "platform", "ports", "privileged", "profiles", "pull_policy", "read_only",
        "restart", "scale", "secrets", "security_opt", "shm_size", "stdin_open",
        "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user",
        "volumes", "working_dir",
    }
)  # fmt: skip
_COMPOSE_CONDITIONS = frozenset(
    {"service_started", "service_healthy", "service_completed_successfully"}
)
_COMPOSE_RESTART = frozenset({"no", "always", "on-failure", "unless-stopped"})
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:us|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(duration: str) -> float:
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(duration))


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return {}


def _check_compose(deploy_dir: Path, report: CheckReport) -> None:
    compose_dir = deploy_dir / "compose"
    files = sorted(compose_dir.glob("*.y*ml"))
    if not files:
        report.error("compose", _rel(compose_dir, deploy_dir), "no compose file")
    for path in files:
        _check_compose_file(path, deploy_dir, report)


def _check_compose_file(path: Path, deploy_dir: Path, report: CheckReport) -> None:
    subject = _rel(path, deploy_dir)
    document = _yaml(path.read_text()) or {}
    base = path.parent

    def error(message: str) -> None:
        report.error("compose", subject, message)

    for key in sorted(set(document) - _COMPOSE_TOP_LEVEL):
        if not key.startswith("x-"):
            error(f"unknown top-level key {key!r}")
    services: dict[str, Any] = document.get("services") or {}
    volumes = set((document.get("volumes") or {}).keys())
    if not services:
        error("no services")
    roles: dict[str, str] = {}
    ports_by_service: dict[str, int] = {}
    for name, service in services.items():
        where = f"service {name}"
        if not isinstance(service, dict):
            error(f"{where} is not a mapping")
            continue
        for key in sorted(set(service) - _COMPOSE_SERVICE_KEYS):
            if not key.startswith("x-"):
                error(f"{where}: unknown key {key!r}")
        if "image" not in service and "build" not in service:
            error(f"{where}: neither image nor build")
        build = service.get("build")
        if isinstance(build, (str, dict)):
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not context.is_dir():
                error(f"{where}: build context {context} does not exist")
            elif not (context / dockerfile).is_file():
                error(f"{where}: Dockerfile {dockerfile} not found in the build context")
        restart = str(service.get("restart", "no"))
        if restart.split(":")[0] not in _COMPOSE_RESTART:
            error(f"{where}: restart {restart!r} is not one of {sorted(_COMPOSE_RESTART)}")
        depends = service.get("depends_on") or {}
        targets = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, options in targets:
            if target not in services:
                error(f"{where}: depends_on unknown service {target!r}")
                continue
            condition = (options or {}).get("condition", "service_started")
            if condition not in _COMPOSE_CONDITIONS:
                error(f"{where}: depends_on {target}: unknown condition {condition!r}")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                error(f"{where}: waits for {target} to be healthy, but it has no healthcheck")
        for port in service.get("ports", []) or []:
            if not _valid_port_spec(port):
                error(f"{where}: invalid port mapping {port!r}")
        for port in service.get("expose", []) or []:
            if not str(port).isdigit() or not 0 < int(port) < 65536:
                error(f"{where}: invalid exposed port {port!r}")
        for volume in service.get("volumes", []) or []:
            source = str(volume if isinstance(volume, str) else volume.get("source", "")).split(
                ":"
            )[0]
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    error(f"{where}: bind mount source {source} does not exist")
            elif source and source not in volumes:
                error(f"{where}: named volume {source!r} is not declared under volumes")
        health = service.get("healthcheck")
        if health is not None:
            test = health.get("test")
            if isinstance(test, list) and (not test or test[0] not in ("CMD", "CMD-SHELL", "NONE")):
                error(f"{where}: healthcheck test must start with CMD, CMD-SHELL or NONE")
            for key in ("interval", "timeout", "start_period", "start_interval"):
                if key in health and not _DURATION.match(str(health[key])):
                    error(f"{where}: healthcheck {key} {health[key]!r} is not a duration")
        grace = service.get("stop_grace_period")
        if grace is not None and not _DURATION.match(str(grace)):
            error(f"{where}: stop_grace_period {grace!r} is not a duration")
        environment = _environment(service.get("environment"))
        sidestream_env = {k: v for k, v in environment.items() if k.startswith("SIDESTREAM_")}
        command = (
            [str(c) for c in service.get("command", []) or []]
            if isinstance(service.get("command"), list)
            else str(service.get("command", "")).split()
        )
        entrypoint = service.get("entrypoint")
        argv = (
            " ".join(command).split()
            if entrypoint in (["sh", "-c"], "sh -c")
            else ["sidestream", *command]
        )
        role = _role(argv)
        if sidestream_env or role:
            problem = _settings_problem(sidestream_env)
            if problem:
                error(f"{where}: {problem}")
                continue
        if role is None:
            continue
        roles[name] = role
        if role.startswith("worker:"):
            deadline = _shutdown_deadline(sidestream_env)
            if grace is None or _seconds(str(grace)) <= deadline:
                error(
                    f"{where}: stop_grace_period {grace} must exceed the drain deadline "
                    f"SIDESTREAM_CONSUMER_SHUTDOWN_DEADLINE_S={deadline:g}s"
                )
            ports_by_service[name] = _metrics_port(sidestream_env)
            if environment.get("SIDESTREAM_METRICS_HOST") != "0.0.0.0":  # noqa: S104
                error(f"{where}: SIDESTREAM_METRICS_HOST must be 0.0.0.0 to be scraped")
        else:
            ports_by_service[name] = int(_option(argv, "--port") or 8000)
            if _option(argv, "--host") != "0.0.0.0":  # noqa: S104
                error(f"{where}: the API must listen on --host 0.0.0.0")
    deployed = {role.split(":", 1)[1] for role in roles.values() if role.startswith("worker:")}
    for worker in sorted(set(DEPLOYED_WORKERS) - deployed):
        error(f"no service runs `sidestream worker run {worker}`")
    if "api" not in roles.values():
        error("no service runs `sidestream api`")
    _check_compose_scrapes(deploy_dir, report, subject, ports_by_service)
    _check_compose_grafana_mounts(deploy_dir, report, subject, services)
    report.ok_(
        "compose",
        subject,
        f"{len(services)} services; structural checks (no compose-spec schema offline)",
    )


def _valid_port_spec(port: Any) -> bool:
    if isinstance(port, dict):
        target = port.get("target")
        return isinstance(target, int) and 0 < target < 65536
    text = str(port).split("/")[0]
    parts = text.rsplit(":", 2)
    numbers = [p for p in parts[-2:] if p]
    for number in numbers:
        low, _, high = number.partition("-")
        for value in (low, high or low):
            if not value.isdigit() or not 0 < int(value) < 65536:
                return False
    return bool(numbers)


def _check_compose_scrapes(
    deploy_dir: Path, report: CheckReport, subject: str, ports: Mapping[str, int]
) -> None:
    config_path = deploy_dir / "prometheus" / "prometheus.yml"
    config = _yaml(config_path.read_text()) or {}
    scraped: dict[str, int] = {}
    for job in config.get("scrape_configs", []):
        if job.get("job_name") != "sidestream":
            continue
        for sd in job.get("dns_sd_configs", []):
            for name in sd.get("names", []):
                scraped[str(name)] = int(sd.get("port", 0))
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, number = str(target).rpartition(":")
                scraped[host] = int(number)
    for service, port in sorted(ports.items()):
        if service not in scraped:
            report.error("compose", subject, f"prometheus.yml does not scrape service {service}")
        elif scraped[service] != port:
            report.error(
                "compose",
                subject,
                f"prometheus.yml scrapes {service} on port {scraped[service]}, it serves {port}",
            )
    for name in sorted(set(scraped) - set(ports)):
        report.error("compose", subject, f"prometheus.yml scrapes {name}, not a Sidestream service")


def _check_compose_grafana_mounts(
    deploy_dir: Path, report: CheckReport, subject: str, services: Mapping[str, Any]
) -> None:
    providers = [
        provider
        for path in sorted((deploy_dir / "grafana/provisioning/dashboards").glob("*.y*ml"))
        for provider in (_yaml(path.read_text()) or {}).get("providers", [])
    ]
    wanted = {str(p.get("options", {}).get("path")) for p in providers if p.get("type") == "file"}
    mounted = {
        str(volume).split(":")[1]
        for service in services.values()
        if isinstance(service, dict)
        for volume in service.get("volumes", []) or []
        if isinstance(volume, str) and "grafana/dashboards" in volume.split(":")[0]
    }
    for path in sorted(wanted - mounted):
        report.error(
            "compose", subject, f"Grafana reads dashboards from {path}; nothing is mounted there"
        )


# --- Kubernetes ------------------------------------------------------------------------

_KEDA_SCALED_OBJECT_SPEC = frozenset(
    {
        "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
        "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced",
        "triggers",
    }
)  # fmt: skip
_KEDA_TRIGGER_KEYS = frozenset(
    {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
)
_KEDA_KAFKA_METADATA = frozenset(
    {
        "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
        "topic", "topicFromEnv", "lagThreshold", "activationLagThreshold",
        "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
        "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
        "ensureEvenDistributionOfPartitions", "version", "partitionLimitation", "sasl",
        "saslTokenProvider", "tls", "unsafeSsl",
    }
)  # fmt: skip
_KEDA_AUTH_SPEC = frozenset(
    {
        "secretTargetRef", "env", "configMapTargetRef", "podIdentity", "hashiCorpVault",
        "azureKeyVault", "awsSecretManager", "gcpSecretManager", "boundServiceAccountToken",
    }
)  # fmt: skip
_KEDA_KAFKA_AUTH_PARAMS = frozenset(
    {"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword",
     "oauthTokenEndpointUri", "scopes", "oauthExtensions"}
)  # fmt: skip


def _check_kubernetes(
    deploy_dir: Path, report: CheckReport, version: str, kubectl: str | None
) -> None:
    k8s = deploy_dir / "k8s"
    roots = [k8s / "base", *sorted(p for p in (k8s / "overlays").glob("*") if p.is_dir())]
    example_secret = _example_secret(k8s / "base" / "secret.example.yaml", report, version)
    for root in roots:
        subject = _rel(root, deploy_dir)
        try:
            objects = render_kustomization(root)
        except (KustomizeError, yaml.YAMLError, OSError) as exc:
            report.error("kubernetes", subject, f"cannot render: {exc}")
            continue
        _validate_objects(objects, report, subject, version)
        _cross_check(objects, report, subject, example_secret)
        _compare_with_kubectl(root, objects, report, subject, kubectl)


def _example_secret(path: Path, report: CheckReport, version: str) -> dict[str, str]:
    if not path.exists():
        report.error(
            "kubernetes", str(path.name), "missing: the Secret's keys are documented there"
        )
        return {}
    secret = _yaml(path.read_text())
    _validate_objects([secret], report, _rel(path, path.parents[2]), version)
    data = {str(k): str(v) for k, v in (secret.get("stringData") or {}).items()}
    return data


@functools.cache
def _kubernetes_validate() -> Any:
    """The ``kubernetes_validate`` module, with its schema loading memoized.

    ``validate`` re-reads and re-parses its JSON schemas (megabytes) on every call;
    ``schema_contents`` is a pure function of its arguments, so caching it for the
    process turns seconds into milliseconds without changing what is validated.
    """
    import kubernetes_validate  # type: ignore[import-untyped]
    import kubernetes_validate.utils  # type: ignore[import-untyped]

    kubernetes_validate.utils.schema_contents = functools.cache(
        kubernetes_validate.utils.schema_contents
    )
    return kubernetes_validate


def _validate_objects(
    objects: list[dict[str, Any]], report: CheckReport, subject: str, version: str
) -> None:
    kubernetes_validate = _kubernetes_validate()
    for obj in objects:
        what = _describe(obj)
        kind = obj.get("kind")
        if _group(obj) == "keda.sh":
            for problem in _keda_problems(obj, version):
                report.error("kubernetes", subject, f"{what}: {problem}")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            report.error("kubernetes", subject, f"{what}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            report.error(
                "kubernetes",
                subject,
                f"{what}: no schema for {obj.get('apiVersion')} {kind} in Kubernetes {version}",
            )
    report.ok_(
        "kubernetes",
        subject,
        f"{len(objects)} objects validated (Kubernetes {version}, strict; KEDA structurally)",
    )


def _keda_problems(obj: Mapping[str, Any], version: str) -> list[str]:
    problems: list[str] = []
    if obj.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append(f"apiVersion {obj.get('apiVersion')} is not keda.sh/v1alpha1")
    name = str(obj.get("metadata", {}).get("name", ""))
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 name")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec is missing"]
    kind = obj.get("kind")
    if kind == "ScaledObject":
        for key in sorted(set(spec) - _KEDA_SCALED_OBJECT_SPEC):
            problems.append(f"spec.{key} is not a ScaledObject field")
        target = spec.get("scaleTargetRef")
        if not isinstance(target, dict) or not target.get("name"):
            problems.append("spec.scaleTargetRef.name is required")
        else:
            extra = set(target) - {"name", "kind", "apiVersion", "envSourceContainerName"}
            if extra:
                problems.append(f"spec.scaleTargetRef: unknown field(s) {sorted(extra)}")
        for key in ("pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                    "idleReplicaCount", "minReplicaCount", "maxReplicaCount"):  # fmt: skip
            if key in spec and (not isinstance(spec[key], int) or spec[key] < 0):
                problems.append(f"spec.{key} must be a non-negative integer")
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append("spec.minReplicaCount exceeds spec.maxReplicaCount")
        problems.extend(_keda_advanced_problems(spec.get("advanced"), version))
        triggers = spec.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            problems.append("spec.triggers must be a non-empty list")
            triggers = []
        for index, trigger in enumerate(triggers):
            problems.extend(f"spec.triggers[{index}]: {p}" for p in _keda_trigger_problems(trigger))
    elif kind == "TriggerAuthentication":
        for key in sorted(set(spec) - _KEDA_AUTH_SPEC):
            problems.append(f"spec.{key} is not a TriggerAuthentication field")
        for ref in spec.get("secretTargetRef", []):
            if set(ref) != {"parameter", "name", "key"}:
                problems.append(
                    f"spec.secretTargetRef item {ref} needs exactly parameter, name, key"
                )
        for ref in spec.get("env", []):
            if not {"parameter", "name"} <= set(ref) <= {"parameter", "name", "containerName"}:
                problems.append(
                    f"spec.env item {ref} needs parameter and name (containerName optional)"
                )
        for ref in [*spec.get("secretTargetRef", []), *spec.get("env", [])]:
            if ref.get("parameter") not in _KEDA_KAFKA_AUTH_PARAMS:
                problems.append(
                    f"parameter {ref.get('parameter')!r} is not a Kafka scaler auth parameter"
                )
    else:
        problems.append(f"kind {kind} is not checked (only ScaledObject, TriggerAuthentication)")
    return problems


def _keda_advanced_problems(advanced: Any, version: str) -> list[str]:
    if advanced is None:
        return []
    kubernetes_validate = _kubernetes_validate()
    problems: list[str] = []
    unknown = set(advanced) - {
        "restoreToOriginalReplicaCount",
        "horizontalPodAutoscalerConfig",
        "scalingModifiers",
    }
    if unknown:
        problems.append(f"spec.advanced: unknown field(s) {sorted(unknown)}")
    hpa = advanced.get("horizontalPodAutoscalerConfig") or {}
    extra = set(hpa) - {"name", "behavior"}
    if extra:
        problems.append(
            f"spec.advanced.horizontalPodAutoscalerConfig: unknown field(s) {sorted(extra)}"
        )
    if "behavior" in hpa:
        # The same type as an HPA's spec.behavior: validate it with the real schema.
        probe = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "probe"},
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "probe"},
                "maxReplicas": 1,
                "behavior": hpa["behavior"],
            },
        }
        try:
            kubernetes_validate.validate(probe, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in list(exc.path)[2:])
            problems.append(f"spec.advanced.horizontalPodAutoscalerConfig.{path}: {exc.message}")
    return problems


def _keda_trigger_problems(trigger: Any) -> list[str]:
    if not isinstance(trigger, dict):
        return ["not a mapping"]
    problems = [f"unknown field {key!r}" for key in sorted(set(trigger) - _KEDA_TRIGGER_KEYS)]
    metadata = trigger.get("metadata")
    if not isinstance(metadata, dict):
        return [*problems, "metadata (a map of strings) is required"]
    for key, value in metadata.items():
        if not isinstance(value, str):
            problems.append(f"metadata.{key} must be a string (quote it), got {value!r}")
    ref = trigger.get("authenticationRef")
    if ref is not None and (
        not isinstance(ref, dict)
        or not ref.get("name")
        or set(ref) - {"name", "kind"}
        or ref.get("kind", "TriggerAuthentication")
        not in ("TriggerAuthentication", "ClusterTriggerAuthentication")
    ):
        problems.append(f"authenticationRef {ref} needs a name (and an optional kind)")
    if trigger.get("metricType", "AverageValue") not in ("AverageValue", "Value", "Utilization"):
        problems.append(
            f"metricType {trigger.get('metricType')!r} is not AverageValue/Value/Utilization"
        )
    if trigger.get("type") != "kafka":
        return [*problems, f"type {trigger.get('type')!r}: only kafka triggers are checked"]
    for key in sorted(set(metadata) - _KEDA_KAFKA_METADATA):
        problems.append(f"metadata.{key} is not a Kafka scaler parameter")
    if not ({"bootstrapServers", "bootstrapServersFromEnv"} & set(metadata)):
        problems.append("metadata needs bootstrapServers or bootstrapServersFromEnv")
    if not ({"consumerGroup", "consumerGroupFromEnv"} & set(metadata)):
        problems.append("metadata needs consumerGroup or consumerGroupFromEnv")
    for key, minimum in (("lagThreshold", 1), ("activationLagThreshold", 0)):
        value = metadata.get(key)
        if value is not None and (not str(value).isdigit() or int(value) < minimum):
            problems.append(f"metadata.{key} must be an integer >= {minimum}, got {value!r}")
    allowed = {
        "offsetResetPolicy": {"earliest", "latest"},
        "sasl": {"none", "plaintext", "scram_sha256", "scram_sha512", "oauthbearer", "gssapi"},
        "tls": {"enable", "disable"},
        "allowIdleConsumers": {"true", "false"},
        "excludePersistentLag": {"true", "false"},
        "scaleToZeroOnInvalidOffset": {"true", "false"},
        "limitToPartitionsWithLag": {"true", "false"},
    }
    for key, values in allowed.items():
        if key in metadata and metadata[key] not in values:
            problems.append(f"metadata.{key} {metadata[key]!r} is not one of {sorted(values)}")
    return problems


def _cross_check(
    objects: list[dict[str, Any]],
    report: CheckReport,
    subject: str,
    example_secret: Mapping[str, str],
) -> None:
    def error(message: str) -> None:
        report.error("kubernetes", subject, message)

    by_kind: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_kind.setdefault(str(obj.get("kind")), []).append(obj)
    names = {(str(o.get("kind")), str(o.get("metadata", {}).get("name"))) for o in objects}
    config_maps = {
        str(c["metadata"]["name"]): {str(k): str(v) for k, v in (c.get("data") or {}).items()}
        for c in by_kind.get("ConfigMap", [])
    }
    consumers = kafka_consumers()
    scaled = {
        str(s["spec"]["scaleTargetRef"]["name"]): s
        for s in by_kind.get("ScaledObject", [])
        if isinstance(s.get("spec", {}).get("scaleTargetRef"), dict)
    }
    deployed: set[str] = set()
    for workload in [*by_kind.get("Deployment", []), *by_kind.get("Job", [])]:
        name = str(workload["metadata"]["name"])
        pod = _pod_spec(workload) or {}
        for container in pod.get("containers", []):
            environment: dict[str, str] = {}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    ref = source["configMapRef"]["name"]
                    if ref not in config_maps:
                        error(f"{name}: envFrom ConfigMap {ref} is not in the kustomization")
                    environment.update(config_maps.get(ref, {}))
                if "secretRef" in source:
                    environment.update(example_secret)
            for variable in container.get("env", []):
                environment[str(variable["name"])] = str(variable.get("value", ""))
            sidestream_env = {k: v for k, v in environment.items() if k.startswith("SIDESTREAM_")}
            problem = _settings_problem(sidestream_env)
            if problem:
                error(f"{name}: {problem}")
                continue
            argv = _command(container)
            role = _role(argv)
            if role is None:
                continue
            if "resources" not in container or "memory" not in container["resources"].get(
                "limits", {}
            ):
                error(
                    f"{name}: container {container.get('name')} needs requests and a memory limit"
                )
            grace = int(pod.get("terminationGracePeriodSeconds", 30))
            if role == "api":
                port = int(_option(argv, "--port") or 8000)
                if _option(argv, "--host") != "0.0.0.0":  # noqa: S104
                    error(f"{name}: the API must listen on --host 0.0.0.0")
                drain = _api_drain_seconds() + _pre_stop_seconds(container)
                if grace <= drain:
                    error(
                        f"{name}: terminationGracePeriodSeconds {grace} must exceed preStop + "
                        f"the API's graceful shutdown ({drain:g}s)"
                    )
            else:
                worker = role.split(":", 1)[1]
                deployed.add(worker)
                port = _metrics_port(sidestream_env)
                deadline = _shutdown_deadline(sidestream_env)
                if grace <= deadline:
                    error(
                        f"{name}: terminationGracePeriodSeconds {grace} must exceed the drain "
                        f"deadline SIDESTREAM_CONSUMER_SHUTDOWN_DEADLINE_S={deadline:g}s"
                    )
                if sidestream_env.get("SIDESTREAM_METRICS_HOST") != "0.0.0.0":  # noqa: S104
                    error(f"{name}: SIDESTREAM_METRICS_HOST must be 0.0.0.0 for probes and scrapes")
                _check_scaling(workload, worker, scaled, consumers, config_maps, names, error)
            _check_probes(name, container, port, error)
            if not _selected_by(by_kind.get("PodDisruptionBudget", []), workload):
                error(f"{name}: no PodDisruptionBudget selects its pods")
    for worker in sorted(set(DEPLOYED_WORKERS) - deployed):
        error(f"no Deployment runs `sidestream worker run {worker}`")
    for worker in sorted(cli_workers() - set(DEPLOYED_WORKERS)):
        error(f"`sidestream worker run {worker}` exists but is not deployed (DEPLOYED_WORKERS)")
    for service in by_kind.get("Service", []):
        selector = service.get("spec", {}).get("selector", {})
        if not any(
            _labels_match(selector, (_pod_template_labels(d)))
            for d in by_kind.get("Deployment", [])
        ):
            error(f"Service {service['metadata']['name']} selects no Deployment's pods")
    for scaled_object in by_kind.get("ScaledObject", []):
        target = scaled_object["spec"]["scaleTargetRef"]["name"]
        if ("Deployment", target) not in names:
            error(f"ScaledObject {scaled_object['metadata']['name']} targets missing {target}")
    report.ok_(
        "kubernetes", subject, "cross-checked against the code (workers, probes, scaling, settings)"
    )


def _pre_stop_seconds(container: Mapping[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return float(pre_stop.get("sleep", {}).get("seconds", 0))


def _check_probes(
    name: str, container: Mapping[str, Any], port: int, error: Callable[[str], None]
) -> None:
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = container.get(probe, {}).get("httpGet")
        if not http:
            error(f"{name}: {probe} must be an httpGet on {path}")
            continue
        if http.get("path") != path:
            error(f"{name}: {probe} checks {http.get('path')}, expected {path}")
        target = http.get("port")
        number = ports.get(target) if isinstance(target, str) else target
        if number != port:
            error(f"{name}: {probe} port {target} is not the served port {port}")


def _check_scaling(
    workload: Mapping[str, Any],
    worker: str,
    scaled: Mapping[str, Mapping[str, Any]],
    consumers: Mapping[str, KafkaConsumer],
    config_maps: Mapping[str, Mapping[str, str]],
    names: set[tuple[str, str]],
    error: Callable[[str], None],
) -> None:
    name = str(workload["metadata"]["name"])
    scaled_object = scaled.get(name)
    consumer = consumers.get(worker)
    if consumer is None:
        if scaled_object is not None:
            error(
                f"{name}: worker {worker} reads no Kafka topic; "
                "a Kafka ScaledObject cannot scale it"
            )
        return
    if scaled_object is None:
        error(f"{name}: Kafka worker {worker} has no KEDA ScaledObject")
        return
    if "replicas" in workload.get("spec", {}):
        error(f"{name}: spec.replicas fights the ScaledObject; leave it out")
    spec = scaled_object["spec"]
    topics: set[str] = set()
    known_env = {key for data in config_maps.values() for key in data}
    for trigger in spec.get("triggers", []):
        metadata = trigger.get("metadata", {})
        if trigger.get("type") != "kafka":
            continue
        if metadata.get("consumerGroup") != consumer.group:
            error(
                f"{name}: trigger consumerGroup {metadata.get('consumerGroup')!r}, "
                f"the worker's group is {consumer.group!r}"
            )
        topic = metadata.get("topic")
        if topic not in consumer.topics:
            error(
                f"{name}: trigger topic {topic!r} is not one the worker reads "
                f"{sorted(consumer.topics)}"
            )
        topics.add(str(topic))
        from_env = metadata.get("bootstrapServersFromEnv")
        if from_env is not None and from_env not in known_env:
            error(f"{name}: bootstrapServersFromEnv {from_env} is not in the ConfigMap")
        ref = trigger.get("authenticationRef")
        if ref is not None and (ref.get("kind", "TriggerAuthentication"), ref["name"]) not in names:
            error(f"{name}: authenticationRef {ref['name']} is not in the kustomization")
    for topic in sorted(set(consumer.topics) - topics):
        error(f"{name}: no trigger on topic {topic}, which the worker reads")
    partitions = min(consumer.topics.values())
    if partitions and int(spec.get("maxReplicaCount", 100)) > partitions:
        error(
            f"{name}: maxReplicaCount {spec.get('maxReplicaCount')} exceeds the "
            f"{partitions} partitions (schemas/topics.yaml): the extra workers would idle"
        )


def _pod_template_labels(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = workload.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    return labels if isinstance(labels, dict) else {}


def _labels_match(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _selected_by(budgets: Iterable[Mapping[str, Any]], workload: Mapping[str, Any]) -> bool:
    labels = _pod_template_labels(workload)
    return any(
        _labels_match(b.get("spec", {}).get("selector", {}).get("matchLabels", {}), labels)
        for b in budgets
    )


def _object_key(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata", {})
    return (
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name")),
    )


def _compare_with_kubectl(
    root: Path,
    objects: list[dict[str, Any]],
    report: CheckReport,
    subject: str,
    kubectl: str | None,
) -> None:
    if kubectl is None:
        report.skip(
            "kubernetes",
            subject,
            "kubectl not found: the renderer's output is not compared with `kubectl kustomize`",
        )
        return
    result = subprocess.run(
        [kubectl, "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        report.error("kubernetes", subject, f"kubectl kustomize failed: {result.stderr.strip()}")
        return
    theirs = {_object_key(o): o for o in _yaml_all(result.stdout)}
    ours = {_object_key(o): o for o in objects}
    if theirs == ours:
        report.ok_("kubernetes", subject, "renderer output equals `kubectl kustomize`")
        return
    for key in sorted(set(theirs) ^ set(ours)):
        side = "only kubectl" if key in theirs else "only the renderer"
        report.error("kubernetes", subject, f"{side} renders {key}")
    for key in sorted(set(theirs) & set(ours)):
        if theirs[key] != ours[key]:
            report.error(
                "kubernetes", subject, f"{key[1]}/{key[3]} differs from `kubectl kustomize`"
            )


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

app = typer.Typer(help="Deployment material (deploy/): offline validation.")


@app.command("check")
def check(
    deploy_dir: Annotated[
        Path | None, typer.Option(help="The deploy/ folder (default: the repository's).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option(help=f"Check only these areas: {', '.join(AREAS)}.")
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
        raise typer.BadParameter(str(exc)) from exc
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
