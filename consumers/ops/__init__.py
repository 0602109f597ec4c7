"""Operator tools for consumer groups: replay, dead-letter redrive and lag.

- :mod:`~consumers.ops.replay` — move a group back to a time, an offset or the beginning
  (Postgres and Kafka offsets together), and run a sink over the range, in place or into
  a shadow schema;
- :mod:`~consumers.ops.redrive` — send chosen dead letters back to their source topic,
  each at most once, recorded in the ``dlq_redrives`` ledger (:mod:`~consumers.ops.ledger`);
  :mod:`~consumers.ops.letters` reads ``<topic>.dlq`` and :mod:`~consumers.ops.dlq_summary`
  groups it by error class;
- :mod:`~consumers.ops.lag` — records and event-time behind, per group and partition.

They read topics by assignment (:class:`TopicReader`) and never trust a single broker
answer they can check: end offsets are confirmed by reading, time lookups are verified
and bisected when wrong.
"""

from consumers.ops.dlq_summary import ErrorClassSummary, dead_letter_summary, summarize
from consumers.ops.errors import (
    BrokerError,
    GroupActiveError,
    KafkaCommitError,
    OpsError,
    PartitionNotFoundError,
    ReadTimeoutError,
    RedriveError,
    ReplayStalledError,
    TopicNotFoundError,
)
from consumers.ops.groups import Activity, GroupActivity, GroupInspector
from consumers.ops.lag import GroupLag, LagReport, PartitionLag, measure_lag
from consumers.ops.ledger import LedgerEntry, ledger_version, redrive_ledger, redriven_positions
from consumers.ops.letters import DeadLetter, LetterFilter, OffsetRange, read_dead_letters
from consumers.ops.pacing import RateLimiter, ThrottledSink
from consumers.ops.reader import EndOffsets, Peek, TopicReader
from consumers.ops.redrive import Redriver, RedriveReport, redrive_dead_letters
from consumers.ops.replay import (
    FromBeginning,
    FromTime,
    PartitionPlan,
    ReplayOutcome,
    ReplayPlan,
    ReplayProgress,
    ReplayRunner,
    ResetResult,
    StartAt,
    ToOffset,
    park_other_partitions,
    plan_replay,
    prepare_shadow_schema,
    replay_target,
    reset_offsets,
    resume_points,
    shadow_group_id,
    start_at,
)
from consumers.ops.timeindex import TimeLookup, offsets_for_time, parse_time

__all__ = [
    "Activity",
    "BrokerError",
    "DeadLetter",
    "EndOffsets",
    "ErrorClassSummary",
    "FromBeginning",
    "FromTime",
    "GroupActiveError",
    "GroupActivity",
    "GroupInspector",
    "GroupLag",
    "KafkaCommitError",
    "LagReport",
    "LedgerEntry",
    "LetterFilter",
    "OffsetRange",
    "OpsError",
    "PartitionLag",
    "PartitionNotFoundError",
    "PartitionPlan",
    "Peek",
    "RateLimiter",
    "ReadTimeoutError",
    "RedriveError",
    "RedriveReport",
    "Redriver",
    "ReplayOutcome",
    "ReplayPlan",
    "ReplayProgress",
    "ReplayRunner",
    "ReplayStalledError",
    "ResetResult",
    "StartAt",
    "ThrottledSink",
    "TimeLookup",
    "ToOffset",
    "TopicNotFoundError",
    "TopicReader",
    "dead_letter_summary",
    "ledger_version",
    "measure_lag",
    "offsets_for_time",
    "park_other_partitions",
    "parse_time",
    "plan_replay",
    "prepare_shadow_schema",
    "read_dead_letters",
    "redrive_dead_letters",
    "redrive_ledger",
    "redriven_positions",
    "replay_target",
    "reset_offsets",
    "resume_points",
    "shadow_group_id",
    "start_at",
    "summarize",
]
