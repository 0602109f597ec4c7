"""Dead-letter redrive: send chosen dead letters back to their source topic.

:class:`Redriver` sends the chosen ones back to their source topic and partition with the
original key, value and headers (``sidestream.dlq.*`` removed) plus
``sidestream.redrive.count`` (one more than the record carried) and
``sidestream.redrive.from``. A record whose count has reached ``max_redrives`` is
skipped and reported: it came back to the dead-letter topic that many times already.

A dead letter that is a truncated reference (``sidestream.dlq.truncated``: the record
was too large for the dead-letter topic) holds only the first KiB of the value: it is
never redriven, but reported with where the full record is, to replay from there.

A source record dead-lettered twice (a replay reads it again, or a worker crashed between
dead-lettering and committing) leaves two dead letters with the same source position and
value: only the first is redriven, the others are reported as repeats.

Exactly once per dead letter: each chunk claims its records in ``dlq_redrives`` (an
``INSERT … ON CONFLICT … DO UPDATE … WHERE`` that claims a position only when it is new or
its row belongs to an earlier incarnation of the topic — another timestamp at the same
position) inside a transaction that stays open until Kafka
has acknowledged every copy, and commits only then. A failed delivery rolls the claims
back (run again to retry); a concurrent redrive waits on the claimed rows and skips
them. A crash between the acknowledgement and the commit can send a copy twice — the
sinks skip the duplicate by ``event_id``.

The dead letters themselves are in :mod:`consumers.ops.letters`, their grouping by error
class in :mod:`consumers.ops.dlq_summary`, the ``dlq_redrives`` ledger in
:mod:`consumers.ops.ledger`; their public names are importable from here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message, Producer
from psycopg import sql

from consumers.ops.dlq_summary import ErrorClassSummary, dead_letter_summary, summarize
from consumers.ops.errors import RedriveError
from consumers.ops.ledger import (
    LedgerEntry,
    _load_redriven,
    _Redriven,
    _table,
    ledger_version,
    redrive_ledger,
    redriven_positions,
)
from consumers.ops.letters import (
    REDRIVE_COUNT_HEADER,
    REDRIVE_FROM_HEADER,
    REDRIVE_PREFIX,
    DeadLetter,
    LetterFilter,
    OffsetRange,
    _Source,
    read_dead_letters,
)
from consumers.ops.positions import has_table
from consumers.ops.reader import TopicReader

logger = logging.getLogger(__name__)

__all__ = [
    "REDRIVE_COUNT_HEADER",
    "REDRIVE_FROM_HEADER",
    "REDRIVE_PREFIX",
    "DeadLetter",
    "ErrorClassSummary",
    "LedgerEntry",
    "LetterFilter",
    "OffsetRange",
    "RedriveReport",
    "Redriver",
    "dead_letter_summary",
    "ledger_version",
    "read_dead_letters",
    "redrive_dead_letters",
    "redrive_ledger",
    "redriven_positions",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """What a redrive did (or, dry, would do)."""

    redriven: tuple[DeadLetter, ...]
    already_redriven: tuple[DeadLetter, ...]
    at_cap: tuple[DeadLetter, ...]
    repeats: tuple[DeadLetter, ...]  # same source record as one redriven (or being) already
    dry_run: bool
    truncated: tuple[DeadLetter, ...] = ()  # references to records too large: not redriven


@dataclass(slots=True)
class _Delivery:
    letter: DeadLetter
    partition: int | None = None
    offset: int | None = None
    error: str | None = None


class Redriver:
    """Sends dead letters back to their source topics, each at most once.

    Args:
        producer: an idempotent producer (the caller flushes and closes it).
        conn: Postgres, with the ``dlq_redrives`` table in ``schema``.
        max_redrives: records that already carry this many redrives are skipped.
        chunk_size: records per claim-and-deliver transaction.
        delivery_timeout_s: how long one chunk may take to be acknowledged.
        operator: recorded in ``redriven_by``.
    """

    def __init__(
        self,
        *,
        producer: Producer,
        conn: psycopg.Connection[Any],
        schema: str,
        max_redrives: int = 3,
        chunk_size: int = 500,
        delivery_timeout_s: float = 30.0,
        operator: str = "sidestream-dlq",
    ) -> None:
        if max_redrives < 0:
            raise ValueError(f"max_redrives must be >= 0, got {max_redrives}")
        self._producer = producer
        self._conn = conn
        self._schema = schema
        self._max_redrives = max_redrives
        self._chunk_size = chunk_size
        self._delivery_timeout_s = delivery_timeout_s
        self._operator = operator
        self._redriven: dict[str, _Redriven] = {}

    def redrive(self, letters: Iterable[DeadLetter], *, dry_run: bool = False) -> RedriveReport:
        """Redrive ``letters``, skipping those redriven before, repeats and those at the cap.

        Raises:
            RedriveError: a chunk's copies were not all acknowledged; that chunk is not
                recorded (earlier chunks are), so running again retries it.
        """
        redriven: list[DeadLetter] = []
        already: list[DeadLetter] = []
        capped: list[DeadLetter] = []
        repeats: list[DeadLetter] = []
        truncated: list[DeadLetter] = []
        chunk: list[DeadLetter] = []
        picked: set[_Source] = set()  # sources chosen by this call (dry runs included)
        for letter in letters:
            state = self._state(letter.dlq_topic)
            source = letter.source
            if letter.truncated:
                truncated.append(letter)
                logger.warning(
                    "not redriving %s (%s): a truncated reference, the record was too large "
                    "for the dead-letter topic; replay it from %s[%s]@%s",
                    letter.where,
                    letter.error_class,
                    letter.source_topic,
                    letter.source_partition,
                    letter.source_offset,
                )
            elif state.positions.get(letter.position) == letter.timestamp_ms:
                already.append(letter)
            elif source is not None and (source in state.sources or source in picked):
                repeats.append(letter)
            elif letter.redrive_count >= self._max_redrives:
                capped.append(letter)
                logger.warning(
                    "not redriving %s (%s): redriven %d times already",
                    letter.where,
                    letter.error_class,
                    letter.redrive_count,
                )
            else:
                chunk.append(letter)
                if source is not None:
                    picked.add(source)
            if len(chunk) >= self._chunk_size:
                self._send(chunk, dry_run, redriven, already)
                chunk = []
        if chunk:
            self._send(chunk, dry_run, redriven, already)
        return RedriveReport(
            tuple(redriven),
            tuple(already),
            tuple(capped),
            tuple(repeats),
            dry_run,
            tuple(truncated),
        )

    def _state(self, dlq_topic: str) -> _Redriven:
        state = self._redriven.get(dlq_topic)
        if state is None:
            state = self._redriven[dlq_topic] = _load_redriven(self._conn, self._schema, dlq_topic)
        return state

    def _send(
        self,
        chunk: list[DeadLetter],
        dry_run: bool,
        redriven: list[DeadLetter],
        already: list[DeadLetter],
    ) -> None:
        if dry_run:
            redriven.extend(chunk)
            return
        with self._conn.transaction():
            claimed = self._claim(chunk)
            already.extend(letter for letter in chunk if letter.identity not in claimed)
            deliveries = [self._produce(letter) for letter in chunk if letter.identity in claimed]
            self._producer.flush(self._delivery_timeout_s)
            failed = [d for d in deliveries if d.error is not None or d.offset is None]
            if failed:
                raise RedriveError(
                    chunk[0].dlq_topic,
                    len(failed),
                    [d.error or "not acknowledged in time" for d in failed],
                )
            self._record_targets(deliveries)
        for delivery in deliveries:
            letter = delivery.letter
            state = self._state(letter.dlq_topic)
            state.positions[letter.position] = letter.timestamp_ms
            if letter.source is not None:
                state.sources.add(letter.source)
            redriven.append(letter)
            logger.info(
                "redrove %s (%s) to %s[%s]@%s",
                letter.where,
                letter.error_class,
                letter.source_topic,
                delivery.partition,
                delivery.offset,
            )

    def _claim(self, chunk: list[DeadLetter]) -> set[tuple[str, int, int]]:
        # A row with another timestamp belongs to an earlier incarnation of the topic.
        rows = self._conn.execute(
            sql.SQL(
                """
                INSERT INTO {table} AS r (dlq_topic, dlq_partition, dlq_offset,
                    dlq_timestamp_ms, source_topic, source_partition, source_offset,
                    value_digest, error_class, redrive_count, redriven_by)
                SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::bigint[],
                    %s::text[], %s::int[], %s::bigint[], %s::bytea[], %s::text[], %s::int[],
                    %s::text[])
                ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE
                   SET dlq_timestamp_ms = EXCLUDED.dlq_timestamp_ms,
                       source_topic = EXCLUDED.source_topic,
                       source_partition = EXCLUDED.source_partition,
                       source_offset = EXCLUDED.source_offset,
                       value_digest = EXCLUDED.value_digest,
                       error_class = EXCLUDED.error_class,
                       redrive_count = EXCLUDED.redrive_count,
                       redriven_by = EXCLUDED.redriven_by,
                       target_partition = NULL, target_offset = NULL, redriven_at = now()
                 WHERE r.dlq_timestamp_ms <> EXCLUDED.dlq_timestamp_ms
                RETURNING dlq_topic, dlq_partition, dlq_offset
                """
            ).format(table=_table(self._schema)),
            (
                [x.dlq_topic for x in chunk],
                [x.partition for x in chunk],
                [x.offset for x in chunk],
                [x.timestamp_ms for x in chunk],
                [x.source_topic for x in chunk],
                [x.source_partition for x in chunk],
                [x.source_offset for x in chunk],
                [x.digest for x in chunk],
                [x.error_class for x in chunk],
                [x.redrive_count + 1 for x in chunk],
                [self._operator] * len(chunk),
            ),
        ).fetchall()
        return {(t, p, o) for t, p, o in rows}

    def _produce(self, letter: DeadLetter) -> _Delivery:
        delivery = _Delivery(letter)

        def on_delivery(err: KafkaError | None, message: Message) -> None:
            if err is not None:
                delivery.error = str(err)
            else:
                delivery.partition, delivery.offset = message.partition(), message.offset()

        headers = [
            *letter.headers,
            (REDRIVE_COUNT_HEADER, str(letter.redrive_count + 1).encode()),
            (
                REDRIVE_FROM_HEADER,
                f"{letter.dlq_topic}:{letter.partition}:{letter.offset}".encode(),
            ),
        ]
        # Back to the partition it came from, so it keeps its place among its key's
        # records (client partitioners differ; the original partition is certain).
        placement: dict[str, Any] = {}
        if letter.source_partition is not None:
            placement["partition"] = letter.source_partition
        self._producer.produce(
            letter.source_topic,
            value=letter.value,
            key=letter.key,
            headers=headers,
            on_delivery=on_delivery,
            **placement,
        )
        return delivery

    def _record_targets(self, deliveries: list[_Delivery]) -> None:
        if not deliveries:
            return
        self._conn.execute(
            sql.SQL(
                """
                UPDATE {table} AS r SET target_partition = v.tp, target_offset = v.toff
                  FROM unnest(%s::text[], %s::int[], %s::bigint[], %s::int[], %s::bigint[])
                       AS v(t, p, o, tp, toff)
                 WHERE r.dlq_topic = v.t AND r.dlq_partition = v.p AND r.dlq_offset = v.o
                """
            ).format(table=_table(self._schema)),
            (
                [d.letter.dlq_topic for d in deliveries],
                [d.letter.partition for d in deliveries],
                [d.letter.offset for d in deliveries],
                [d.partition for d in deliveries],
                [d.offset for d in deliveries],
            ),
        )


# --- what the CLI and the console both do -----------------------------------------------
def redrive_dead_letters(
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    producer: Producer,
    schema: str,
    dlq_topic: str,
    letter_filter: LetterFilter | None = None,
    max_redrives: int = 3,
    dry_run: bool = False,
    operator: str = "sidestream-dlq",
) -> RedriveReport:
    """Redrive the dead letters of ``dlq_topic`` that ``letter_filter`` selects (see
    :class:`Redriver`); ``dry_run`` reports what would be sent and sends nothing.

    Raises:
        ValueError: no ``dlq_redrives`` table in ``schema`` (run the migrations).
        RedriveError: a chunk was not acknowledged (see :meth:`Redriver.redrive`).
    """
    if not has_table(conn, schema, "dlq_redrives"):
        raise ValueError(f"no dlq_redrives table in schema {schema}: run `sidestream db migrate`")
    redriver = Redriver(
        producer=producer, conn=conn, schema=schema, max_redrives=max_redrives, operator=operator
    )
    return redriver.redrive(read_dead_letters(reader, dlq_topic, letter_filter), dry_run=dry_run)
