"""Consumer groups that land events in Postgres: one batch runtime, many sinks.

Flow of one event: Kafka topic → :class:`BatchRuntime` batch → :class:`Sink` rows and
``consumer_offsets`` in one Postgres transaction (or the dead-letter topic).
"""

from consumers.dead_letters import DeadLetterError, DeadLetters, dead_letter_topic
from consumers.log_range import OffsetOutOfRange, OutOfRangePolicy
from consumers.migrations_source import CONSUMER_MIGRATIONS
from consumers.offsets import Claim, Fenced, PostgresOffsets
from consumers.records import RawRecord, Record
from consumers.runtime import BatchConfig, BatchRuntime
from consumers.sink import Sink
from consumers.worker import SINKS, WorkerOptions, group_id_for, run_worker
from runtime.lifecycle import ExitStatus

__all__ = [
    "CONSUMER_MIGRATIONS",
    "SINKS",
    "BatchConfig",
    "BatchRuntime",
    "Claim",
    "DeadLetterError",
    "DeadLetters",
    "ExitStatus",
    "Fenced",
    "OffsetOutOfRange",
    "OutOfRangePolicy",
    "PostgresOffsets",
    "RawRecord",
    "Record",
    "Sink",
    "WorkerOptions",
    "dead_letter_topic",
    "group_id_for",
    "run_worker",
]
