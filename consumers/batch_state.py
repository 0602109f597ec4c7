"""The state :class:`~consumers.runtime.BatchRuntime` keeps, declared for its parts.

The runtime's methods live in one mixin per concept (polling, recovery, committing,
claiming); each reads and changes this one set of attributes, which
``BatchRuntime.__init__`` sets (and comments). Declared here so that every part is
type-checked against the same names; nothing here runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, Message
from psycopg_pool import ConnectionPool

from consumers.dead_letters import DeadLetters
from consumers.log_range import LogBounds
from consumers.metrics import ConsumerMetrics
from consumers.offsets import Claim, PostgresOffsets, TopicPartitionKey
from consumers.sink import Sink
from runtime.memory import FreeMemoryReleaser
from schemas import EventDeserializer

if TYPE_CHECKING:
    from consumers.batch_claims import _Refused
    from consumers.batch_writer import _Batch, _Writer, _Written
    from consumers.runtime import BatchConfig


class _RuntimeState:
    """The attributes shared by the parts of the batch runtime (see its ``__init__``)."""

    _sink: Sink
    _topics: list[str]
    _consumer: Consumer
    _pool: ConnectionPool
    _dead_letters: DeadLetters
    _deserializer: EventDeserializer
    _log_bounds: LogBounds
    _metrics: ConsumerMetrics
    _config: BatchConfig
    _clock: Callable[[], float]
    _group_id: str
    _offsets: PostgresOffsets
    _rows: Any  # the sink's row decoder (consumers.rows), or None; getattr gives it as Any
    _claims: dict[TopicPartitionKey, Claim]
    _refused: dict[TopicPartitionKey, _Refused]
    _announced: dict[TopicPartitionKey, int]
    _stored: dict[TopicPartitionKey, int]
    _buffer: list[Message]
    _batch_opened_at: float | None
    _waiting: _Batch | None
    _in_flight: _Batch | None
    _outcome: _Written | BaseException | None
    _writer: _Writer | None
    _drained: bool
    _paused: bool
    _rewind: dict[TopicPartitionKey, int]
    _failing_since: float | None
    _reported_unready: bool
    _next_maintenance: float
    _lag_series: set[TopicPartitionKey]
    _stop_requested: threading.Event
    _memory: FreeMemoryReleaser
    batches_committed: int
