"""The operator tools' errors: one small tree, each with the fields an operator needs."""

from __future__ import annotations

from collections.abc import Iterable

from consumers.errors import ConsumerError


class OpsError(ConsumerError):
    """Base of every error the replay, redrive and lag tools raise on purpose."""


class TopicNotFoundError(OpsError):
    """The topic does not exist on the cluster."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(f"topic {topic!r} does not exist")


class PartitionNotFoundError(OpsError):
    """A requested partition is not one of the topic's."""

    def __init__(self, topic: str, partitions: Iterable[int], existing: Iterable[int]) -> None:
        self.topic = topic
        self.partitions = sorted(partitions)
        self.existing = sorted(existing)
        super().__init__(
            f"topic {topic!r} has no partition(s) {self.partitions}; it has {self.existing}"
        )


class ReadTimeoutError(OpsError):
    """Reading a topic made no progress within the time allowed."""

    def __init__(self, topic: str, partitions: Iterable[int], timeout_s: float) -> None:
        self.topic = topic
        self.partitions = sorted(partitions)
        self.timeout_s = timeout_s
        super().__init__(
            f"reading {topic}{self.partitions} made no progress within {timeout_s:.0f}s"
        )


class GroupActiveError(OpsError):
    """The consumer group has (or may have) live members: its offsets must not move."""

    def __init__(self, group: str, state: str, detail: str) -> None:
        self.group = group
        self.state = state
        self.detail = detail
        super().__init__(
            f"group {group!r} {detail} (broker state {state}); stop its workers first, "
            "or pass --force to move the Postgres offsets anyway (running workers are "
            "fenced and stop committing those partitions until they rejoin)"
        )


class KafkaCommitError(OpsError):
    """Kafka refused to store the group's committed offsets."""

    def __init__(self, group: str, errors: Iterable[str]) -> None:
        self.group = group
        self.errors = list(errors)
        super().__init__(f"group {group!r}: committing offsets to Kafka failed: {self.errors}")


class ReplayStalledError(OpsError):
    """A replay run made no progress for too long (database down? worker stuck?)."""

    def __init__(self, group: str, stalled_s: float, remaining: int) -> None:
        self.group = group
        self.stalled_s = stalled_s
        self.remaining = remaining
        super().__init__(
            f"replay of group {group!r} made no progress for {stalled_s:.0f}s with "
            f"{remaining} records left; offsets are stored, re-run with --resume"
        )


class RedriveError(OpsError):
    """Redriven records could not be delivered; nothing of that chunk was recorded."""

    def __init__(self, dlq_topic: str, failed: int, errors: Iterable[str]) -> None:
        self.dlq_topic = dlq_topic
        self.failed = failed
        self.errors = list(errors)
        super().__init__(
            f"redriving from {dlq_topic}: {failed} deliveries failed: {self.errors[:3]}"
        )


class BrokerError(OpsError):
    """A Kafka request of the operator tools failed."""

    def __init__(self, operation: str, error: object) -> None:
        self.operation = operation
        self.error = str(error)
        super().__init__(f"{operation} failed: {self.error}")
