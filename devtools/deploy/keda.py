"""KEDA objects (``ScaledObject``, ``TriggerAuthentication``) checked against the fields
KEDA documents: its CRDs are not in kubernetes-validate's schemas. The HPA ``behavior``
inside a ScaledObject is validated with the real ``autoscaling/v2`` schema."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["keda_problems", "kubernetes_validate_module"]

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


@functools.cache
def kubernetes_validate_module() -> Any:
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


def keda_problems(obj: Mapping[str, Any], version: str) -> list[str]:
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
    kubernetes_validate = kubernetes_validate_module()
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
