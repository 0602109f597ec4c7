"""Stored offsets checked against the log they point into.

Postgres keeps a group's positions; the broker keeps the log. The two can disagree: a
topic deleted and recreated, retention that passed a stored offset, or a local broker
restarted with empty memory while Postgres kept its offsets. A fetch past the end of a
partition may answer with silence (the local broker does), so following such an offset
would skip the next records without a word. A position outside ``[start, end]`` is
therefore a named condition, :class:`OffsetOutOfRange`, handled by an
:class:`OutOfRangePolicy` — never a silent seek.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from consumers.offsets import TopicPartitionKey


class OutOfRangePolicy(StrEnum):
    """What a worker does with a stored offset outside its partition's log."""

    REFUSE = "refuse"  # do not consume the partition; not ready until an operator decides
    EARLIEST = "earliest"  # reset to the log's start (re-read everything it holds)
    LATEST = "latest"  # reset to the log's end (skip what it holds)


@dataclass(frozen=True, slots=True)
class OffsetOutOfRange:
    """A partition's stored position lies outside its log ``[start, end]``."""

    topic: str
    partition: int
    stored: int
    start: int
    end: int  # confirmed by reading (some brokers report it short)

    @property
    def key(self) -> TopicPartitionKey:
        return (self.topic, self.partition)

    @property
    def past_end(self) -> bool:
        return self.stored > self.end

    @property
    def where(self) -> str:
        """``past the end`` or ``before the start``."""
        return "past the end" if self.past_end else "before the start"

    def fix_command(self, group_id: str) -> str:
        """The operator command that re-reads what the log holds."""
        return (
            f"sidestream replay --group {group_id} --topic {self.topic} "
            f"--partitions {self.partition} --from-beginning --force"
        )

    def describe(self, group_id: str) -> str:
        """One line: group, topic, partition, stored offset, start and end."""
        return (
            f"group {group_id}: {self.topic}[{self.partition}] stored offset {self.stored} "
            f"is {self.where} of the log (start {self.start}, end {self.end})"
        )


class LogBounds(Protocol):
    """Reads where partitions start and end (see ``consumers.ops.TopicReader``)."""

    def out_of_range(
        self, positions: Mapping[TopicPartitionKey, int]
    ) -> dict[TopicPartitionKey, OffsetOutOfRange]:
        """The positions outside their partition's log (every other one is fine).

        Raises:
            ConnectionError: the broker did not answer (transient: retry later).
            TimeoutError: a partition's end could not be confirmed in time (transient).
        """
        ...  # pragma: no cover - a protocol
