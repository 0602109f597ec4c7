"""Topics as code: compare ``schemas/topics.yaml`` with the cluster, then apply the plan.

:func:`plan_topics` reads the cluster (metadata and topic configs) and returns a
:class:`TopicPlan`: topics to create, partition counts and configs that differ, and topics
under the managed prefix that the file does not list. :func:`apply_topics` carries it out:
it creates what is missing, raises partition counts, sets differing configs, and deletes
unlisted topics only with ``prune=True``. What the broker cannot do (some brokers lack
CreatePartitions or IncrementalAlterConfigs) is reported as "unsupported by broker" in the
result, detected from the broker's answer, instead of failing the whole apply.

Replication factors are clamped to the number of brokers (a single local broker cannot
hold three replicas), with a note in the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from producers.errors import TopicsError
from schemas.topics import TopicSpec

__all__ = [
    "MANAGED_PREFIX",
    "ConfigChange",
    "PartitionChange",
    "TopicPlan",
    "apply_topics",
    "plan_topics",
]

MANAGED_PREFIX = "sidestream."
"""Topics under this prefix belong to the topics file: others on the cluster are ignored."""

# Errors that mean "this broker does not implement the request", not "the request is wrong".
_UNSUPPORTED = frozenset(
    {
        KafkaError._UNSUPPORTED_FEATURE,
        KafkaError._NOT_IMPLEMENTED,
        KafkaError.UNSUPPORTED_VERSION,
    }
)


@dataclass(frozen=True, slots=True)
class PartitionChange:
    """A topic whose partition count differs from the file."""

    topic: str
    current: int
    wanted: int

    @property
    def possible(self) -> bool:
        """Kafka can add partitions, never remove them."""
        return self.wanted > self.current


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """One config entry of one topic that differs from the file (None: not set there)."""

    topic: str
    name: str
    current: str | None
    wanted: str


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """What differs between the file and the cluster; `render()` shows it."""

    checked: int = 0
    """How many topics of the file were compared."""
    create: tuple[TopicSpec, ...] = ()
    """Missing topics, replication factor already clamped to the cluster."""
    partitions: tuple[PartitionChange, ...] = ()
    configs: tuple[ConfigChange, ...] = ()
    extra: tuple[str, ...] = ()
    """Topics under the managed prefix that are on the cluster but not in the file."""
    notes: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        """True when applying would change nothing."""
        return not (self.create or self.partitions or self.configs or self.extra)

    def rows(self) -> list[tuple[str, str, str]]:
        """(action, topic, detail) per difference: the rows of a table."""
        rows = [
            (
                "create",
                spec.name,
                f"{_count(spec.partitions, 'partition')}, replication factor "
                f"{spec.replication_factor}"
                + "".join(f", {k}={v}" for k, v in sorted(spec.config.items())),
            )
            for spec in self.create
        ]
        for change in self.partitions:
            detail = f"partitions {change.current} -> {change.wanted}"
            if not change.possible:
                detail += " (Kafka cannot remove partitions: recreate the topic)"
            rows.append(("partitions", change.topic, detail))
        rows += [
            ("config", c.topic, f"{c.name}: {_shown(c.current)} -> {c.wanted}")
            for c in self.configs
        ]
        rows += [
            ("not in file", name, "on the cluster, not in the file (deleted only with prune)")
            for name in self.extra
        ]
        return rows

    def render(self) -> str:
        """The plan as text, one line per difference, then the notes."""
        if self.in_sync:
            lines = [f"Topics are in sync with the file ({self.checked} checked)."]
        else:
            lines = [
                f"Topics plan: {len(self.create)} to create, {len(self.partitions)} partition "
                f"changes, {len(self.configs)} config changes, {len(self.extra)} not in the file"
            ]
            symbols = {"create": "+", "partitions": "~", "config": "~", "not in file": "?"}
            lines += [
                f"  {symbols[action]} {topic}: {action if action == 'create' else ''}"
                f"{' ' if action == 'create' else ''}{detail}"
                for action, topic, detail in self.rows()
            ]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shown(value: str | None) -> str:
    return "(not set)" if value is None else value


def _error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _describe(exc: BaseException) -> str:
    error = _error_of(exc)
    return error.str() if error is not None else f"{type(exc).__name__}: {exc}"


def _unsupported(exc: BaseException) -> bool:
    error = _error_of(exc)
    return error is not None and error.code() in _UNSUPPORTED


def plan_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    prefix: str = MANAGED_PREFIX,
    timeout: float = 10.0,
) -> TopicPlan:
    """Compare `specs` (``schemas.topics.load_topics()``) with the cluster behind `admin`.

    Only topics whose names start with `prefix` can be reported as not in the file.
    Raises `KafkaException` if the cluster cannot be reached within `timeout`.
    """
    wanted = list(specs)
    names = [spec.name for spec in wanted]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"topics listed twice: {', '.join(duplicates)}")
    metadata = admin.list_topics(timeout=timeout)
    brokers = max(1, len(metadata.brokers))
    existing = {name: topic for name, topic in metadata.topics.items() if topic.error is None}

    create: list[TopicSpec] = []
    partitions: list[PartitionChange] = []
    notes: list[str] = []
    clamped: list[str] = []
    present: list[TopicSpec] = []
    for spec in wanted:
        replication = min(spec.replication_factor, brokers)
        if replication < spec.replication_factor:
            clamped.append(spec.name)
        topic = existing.get(spec.name)
        if topic is None:
            create.append(dataclasses.replace(spec, replication_factor=replication))
            continue
        present.append(spec)
        if len(topic.partitions) != spec.partitions:
            partitions.append(PartitionChange(spec.name, len(topic.partitions), spec.partitions))
        first = topic.partitions.get(0)
        current_replication = len(first.replicas) if first is not None else replication
        if current_replication != replication:
            notes.append(
                f"{spec.name} has replication factor {current_replication}, the file wants "
                f"{replication}: changing it needs a partition reassignment (not done here)"
            )
    if clamped:
        notes.insert(
            0,
            f"replication factor clamped to {brokers} (the cluster has {brokers} "
            f"{'broker' if brokers == 1 else 'brokers'}) for {_count(len(clamped), 'topic')}",
        )
    configs = _config_changes(admin, present, notes, timeout)
    listed = set(names)
    extra = tuple(sorted(n for n in existing if n.startswith(prefix) and n not in listed))
    return TopicPlan(
        checked=len(wanted),
        create=tuple(create),
        partitions=tuple(partitions),
        configs=tuple(configs),
        extra=extra,
        notes=tuple(notes),
    )


def _config_changes(
    admin: AdminClient, specs: Sequence[TopicSpec], notes: list[str], timeout: float
) -> list[ConfigChange]:
    wanted = [spec for spec in specs if spec.config]
    if not wanted:
        return []
    resources = {spec.name: ConfigResource(ResourceType.TOPIC, spec.name) for spec in wanted}
    try:
        futures = admin.describe_configs(list(resources.values()), request_timeout=timeout)
    except KafkaException as exc:
        notes.append(
            f"config differences unknown: the broker did not describe configs ({_describe(exc)})"
        )
        return []
    changes: list[ConfigChange] = []
    for spec in wanted:
        try:
            entries = futures[resources[spec.name]].result(timeout=timeout)
        except Exception as exc:
            notes.append(f"config of {spec.name} unknown: {_describe(exc)}")
            continue
        for name, value in sorted(spec.config.items()):
            entry = entries.get(name)
            current = None if entry is None else entry.value
            if current != value:
                changes.append(ConfigChange(spec.name, name, current, value))
    return changes


def apply_topics(
    admin: AdminClient,
    plan: TopicPlan,
    *,
    prune: bool = False,
    dry_run: bool = False,
    timeout: float = 30.0,
) -> list[str]:
    """Carry out `plan`; returns one line per thing done (or, with `dry_run`, that would be).

    Deletes the plan's unlisted topics only with `prune`. A change the broker does not
    support is reported ("unsupported by broker: ..."), not raised.

    Raises:
        TopicsError: creating, changing or deleting a topic failed for another reason;
            ``done`` lists what was done before.
    """
    done: list[str] = []
    failures: list[str] = []
    would = "would " if dry_run else ""

    if plan.create:
        if dry_run:
            done += [f"would create {spec.name}" for spec in plan.create]
        else:
            _create(admin, plan.create, done, failures, timeout)

    for change in plan.partitions:
        if not change.possible:
            done.append(
                f"left {change.topic} at {change.current} partitions: the file wants "
                f"{change.wanted}, and Kafka cannot remove partitions (recreate the topic)"
            )
        elif dry_run:
            done.append(
                f"would add partitions to {change.topic}: {change.current} -> {change.wanted}"
            )
        else:
            _add_partitions(admin, change, done, failures, timeout)

    by_topic: dict[str, list[ConfigChange]] = {}
    for config_change in plan.configs:
        by_topic.setdefault(config_change.topic, []).append(config_change)
    for topic, changes in by_topic.items():
        diff = ", ".join(f"{c.name} {_shown(c.current)} -> {c.wanted}" for c in changes)
        if dry_run:
            done.append(f"would change config of {topic}: {diff}")
        else:
            _alter_configs(admin, topic, changes, diff, done, failures, timeout)

    for name in plan.extra:
        if not prune:
            done.append(f"kept {name}: not in the topics file (pass prune=True to delete it)")
        elif dry_run:
            done.append(f"{would}delete {name}")
        else:
            _delete(admin, name, done, failures, timeout)

    if failures:
        raise TopicsError("; ".join(failures), done=done)
    return done


def _create(
    admin: AdminClient,
    specs: Sequence[TopicSpec],
    done: list[str],
    failures: list[str],
    timeout: float,
) -> None:
    futures = admin.create_topics(
        [
            NewTopic(
                spec.name,
                num_partitions=spec.partitions,
                replication_factor=spec.replication_factor,
                config=dict(spec.config),
            )
            for spec in specs
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for spec in specs:
        try:
            futures[spec.name].result(timeout=timeout)
        except Exception as exc:
            error = _error_of(exc)
            if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                done.append(f"{spec.name} already exists (created meanwhile)")
            else:
                failures.append(f"cannot create {spec.name}: {_describe(exc)}")
            continue
        done.append(
            f"created {spec.name} ({_count(spec.partitions, 'partition')}, replication factor "
            f"{spec.replication_factor})"
        )


def _add_partitions(
    admin: AdminClient,
    change: PartitionChange,
    done: list[str],
    failures: list[str],
    timeout: float,
) -> None:
    what = f"partitions of {change.topic}: {change.current} -> {change.wanted}"
    try:
        futures = admin.create_partitions(
            [NewPartitions(change.topic, change.wanted)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[change.topic].result(timeout=timeout)
    except Exception as exc:
        if _unsupported(exc):
            done.append(f"unsupported by broker: cannot change {what} ({_describe(exc)})")
        else:
            failures.append(f"cannot change {what}: {_describe(exc)}")
        return
    done.append(f"changed {what}")


def _alter_configs(
    admin: AdminClient,
    topic: str,
    changes: Sequence[ConfigChange],
    diff: str,
    done: list[str],
    failures: list[str],
    timeout: float,
) -> None:
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(c.name, c.wanted, incremental_operation=AlterConfigOpType.SET)
            for c in changes
        ],
    )
    try:
        futures = admin.incremental_alter_configs([resource], request_timeout=timeout)
        futures[resource].result(timeout=timeout)
    except Exception as exc:
        if _unsupported(exc):
            done.append(
                f"unsupported by broker: cannot change config of {topic} ({diff}): {_describe(exc)}"
            )
        else:
            failures.append(f"cannot change config of {topic} ({diff}): {_describe(exc)}")
        return
    done.append(f"changed config of {topic}: {diff}")


def _delete(
    admin: AdminClient, name: str, done: list[str], failures: list[str], timeout: float
) -> None:
    try:
        futures = admin.delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
        futures[name].result(timeout=timeout)
    except Exception as exc:
        failures.append(f"cannot delete {name}: {_describe(exc)}")
        return
    done.append(f"deleted {name} (not in the topics file)")
