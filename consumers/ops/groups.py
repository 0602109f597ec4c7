"""What Kafka knows about a consumer group: is anyone in it, and its committed offsets.

A group's offsets may only move while it has no live members — Kafka itself refuses a
commit from outside a group that has members. Brokers differ in how much they say:
Apache Kafka lists the members; the local tansu reports the state (``STABLE``) but an
empty member list, and keeps a crashed member's group ``STABLE`` until someone joins.
So the verdict is made from both fields, and "the broker would not say" is its own
answer (callers refuse unless forced).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from consumers.ops.errors import BrokerError, KafkaCommitError
from consumers.ops.reader import Key
from runtime import Settings
from runtime.clients import kafka_admin, kafka_consumer

_ACTIVE_STATES = {"STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE", "ASSIGNING"}
_IDLE_STATES = {"EMPTY", "DEAD"}


class Activity(StrEnum):
    """The verdict on a group's membership."""

    IDLE = "idle"  # no members: its offsets may move
    ACTIVE = "active"  # live members (listed, or implied by the group's state)
    UNKNOWN = "unknown"  # the broker would not say


@dataclass(frozen=True, slots=True)
class GroupActivity:
    """A consumer group's membership as the broker describes it."""

    group: str
    activity: Activity
    state: str  # the broker's state name, e.g. STABLE, EMPTY
    members: int | None  # None: the broker did not list members
    detail: str  # a phrase for messages: "has 2 live member(s)", ...

    @property
    def idle(self) -> bool:
        return self.activity is Activity.IDLE

    def summary(self) -> str:
        """A short cell for tables: ``idle``, ``2 members``, ``active (unlisted)``, ..."""
        if self.members:
            return f"{self.members} member{'s' if self.members != 1 else ''}"
        if self.activity is Activity.ACTIVE:
            return f"{self.state.lower()} (members unlisted)"
        return self.activity.value if self.activity is Activity.UNKNOWN else "none"


class GroupInspector:
    """Describes groups and reads or writes their Kafka-committed offsets.

    Args:
        admin: an admin client.
        new_consumer: builds a consumer for a group id; used only to commit that group's
            offsets (it never subscribes, so it never joins the group).
        timeout_s: per request.
    """

    def __init__(
        self,
        *,
        admin: AdminClient,
        new_consumer: Callable[[str], Consumer],
        timeout_s: float = 10.0,
    ) -> None:
        self._admin = admin
        self._new_consumer = new_consumer
        self._timeout_s = timeout_s

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout_s: float = 10.0) -> GroupInspector:
        def new_consumer(group: str) -> Consumer:
            return kafka_consumer(
                settings, group, **{"client.id": f"sidestream-ops-{uuid.uuid4().hex[:8]}"}
            )

        return cls(admin=kafka_admin(settings), new_consumer=new_consumer, timeout_s=timeout_s)

    def activity(self, group: str) -> GroupActivity:
        """Whether ``group`` has live members (a group never seen is idle)."""
        try:
            future = self._admin.describe_consumer_groups([group])[group]
            described = future.result(timeout=self._timeout_s)
        except Exception as exc:  # the broker may not support the request at all
            return GroupActivity(
                group, Activity.UNKNOWN, "UNKNOWN", None, f"could not be described ({exc})"
            )
        state = getattr(described.state, "name", str(described.state)).upper()
        members = list(described.members or [])
        if members:
            clients = ", ".join(sorted({m.client_id for m in members}))
            return GroupActivity(
                group,
                Activity.ACTIVE,
                state,
                len(members),
                f"has {len(members)} live member(s) ({clients})",
            )
        if state in _IDLE_STATES:
            return GroupActivity(group, Activity.IDLE, state, 0, "has no members")
        if state in _ACTIVE_STATES:
            return GroupActivity(
                group,
                Activity.ACTIVE,
                state,
                None,
                "is active but the broker lists no members (a crashed member can keep a "
                "group so until its session expires or another member joins)",
            )
        return GroupActivity(
            group, Activity.UNKNOWN, state, None, f"is in state {state}; members unknown"
        )

    def committed(self, group: str) -> dict[Key, int]:
        """The group's offsets committed in Kafka (partitions without one are absent)."""
        request = ConsumerGroupTopicPartitions(group)
        try:
            result = self._admin.list_consumer_group_offsets([request])[group].result(
                timeout=self._timeout_s
            )
        except KafkaException as exc:
            raise BrokerError(f"committed offsets of group {group}", exc) from exc
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def commit(self, group: str, offsets: Mapping[Key, int]) -> None:
        """Store ``offsets`` as the group's committed offsets in Kafka (synchronously).

        Raises:
            KafkaCommitError: Kafka refused (e.g. the group has live members).
        """
        if not offsets:
            return
        consumer = self._new_consumer(group)
        try:
            result = consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
            errors = [
                f"{tp.topic}[{tp.partition}]: {tp.error}"
                for tp in result or []
                if tp.error is not None
            ]
        except KafkaException as exc:
            raise KafkaCommitError(group, [str(exc.args[0] if exc.args else exc)]) from exc
        finally:
            consumer.close()
        if errors:
            raise KafkaCommitError(group, errors)
