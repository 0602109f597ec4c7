"""Kubernetes manifests: each kustomization rendered by ``kubectl kustomize``, built-in
kinds validated strictly with kubernetes-validate, KEDA objects by :mod:`.keda`, then
cross-checked with the code: every worker deployed, probes on the served port, grace
periods above the drain deadlines, scaling on the real consumer group and topics, and
ConfigMap + Secret building a valid :class:`runtime.Settings`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from devtools.deploy.keda import keda_problems, kubernetes_validate_module
from devtools.deploy.kustomize import KustomizeError, render_kustomization
from devtools.deploy.report import CheckReport, load_yaml, relative
from devtools.deploy.workload import (
    KafkaConsumer,
    api_drain_seconds,
    command_line,
    deployed_workers,
    kafka_consumers,
    metrics_port,
    option,
    role,
    settings_problem,
    shutdown_deadline,
)

_POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"})


def check_kubernetes(
    deploy_dir: Path, report: CheckReport, version: str, kubectl: str | None
) -> None:
    """Render, validate and cross-check ``k8s/base`` and every ``k8s/overlays/*``."""
    k8s = deploy_dir / "k8s"
    roots = [k8s / "base", *sorted(p for p in (k8s / "overlays").glob("*") if p.is_dir())]
    example_secret = _example_secret(k8s / "base" / "secret.example.yaml", report, version)
    for root in roots:
        subject = relative(root, deploy_dir)
        if kubectl is None:
            report.skip(
                "kubernetes",
                subject,
                "kubectl not found: kustomizations not rendered, manifests not validated "
                "(install kubectl, e.g. Debian's kubernetes-client, to run this check)",
            )
            continue
        try:
            objects = render_kustomization(root, kubectl)
        except KustomizeError as exc:
            report.error("kubernetes", subject, f"cannot render: {exc}")
            continue
        _validate_objects(objects, report, subject, version)
        _cross_check(objects, report, subject, example_secret)


def _example_secret(path: Path, report: CheckReport, version: str) -> dict[str, str]:
    if not path.exists():
        report.error(
            "kubernetes", str(path.name), "missing: the Secret's keys are documented there"
        )
        return {}
    secret = load_yaml(path.read_text())
    _validate_objects([secret], report, relative(path, path.parents[2]), version)
    data = {str(k): str(v) for k, v in (secret.get("stringData") or {}).items()}
    return data


def _validate_objects(
    objects: list[dict[str, Any]], report: CheckReport, subject: str, version: str
) -> None:
    kubernetes_validate = kubernetes_validate_module()
    for obj in objects:
        what = _describe(obj)
        kind = obj.get("kind")
        if _group(obj) == "keda.sh":
            for problem in keda_problems(obj, version):
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
            problem = settings_problem(sidestream_env)
            if problem:
                error(f"{name}: {problem}")
                continue
            argv = command_line(container)
            process = role(argv)
            if process is None:
                continue
            if "resources" not in container or "memory" not in container["resources"].get(
                "limits", {}
            ):
                error(
                    f"{name}: container {container.get('name')} needs requests and a memory limit"
                )
            grace = int(pod.get("terminationGracePeriodSeconds", 30))
            if process == "api":
                port = int(option(argv, "--port") or 8000)
                if option(argv, "--host") != "0.0.0.0":  # noqa: S104
                    error(f"{name}: the API must listen on --host 0.0.0.0")
                drain = api_drain_seconds() + _pre_stop_seconds(container)
                if grace <= drain:
                    error(
                        f"{name}: terminationGracePeriodSeconds {grace} must exceed preStop + "
                        f"the API's graceful shutdown ({drain:g}s)"
                    )
            else:
                worker = process.split(":", 1)[1]
                deployed.add(worker)
                port = metrics_port(sidestream_env)
                deadline = shutdown_deadline(sidestream_env)
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
    for worker in sorted(deployed_workers() - deployed):
        error(f"no Deployment runs `sidestream worker run {worker}`")
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


def _pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") not in _POD_TEMPLATE_KINDS:
        return None
    spec = obj.get("spec", {}).get("template", {}).get("spec")
    return spec if isinstance(spec, dict) else None


def _group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion", ""))
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def _describe(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
