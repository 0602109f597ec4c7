"""Decoding a batch and writing it: one Postgres transaction, then commit.

Runs on the writer thread (or the loop's): records are decoded (undecodable ones set
aside as poison), the sink writes its rows (rows the database rejects for their
data are isolated by bisecting in savepoints), dead letters are flushed, and the offsets
are stored fenced by the claims the batch was cut under.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Message

from consumers.batch_state import _RuntimeState
from consumers.batch_writer import _Batch, _Poison, _Written
from consumers.records import RawRecord, Record, headers_of
from runtime.retry import is_poison
from schemas import DecodeError, UnknownSchemaError, ValidationError

logger = logging.getLogger(__name__)


class _RowsRejectedError(Exception):
    """The database rejected a row of the batch for its data: bisect to find it."""


class _Committing(_RuntimeState):
    """:meth:`_decode` and :meth:`_write_and_commit` (the one transaction of a batch)."""

    def _decode(self, messages: list[Message]) -> tuple[list[Record[Any]], list[_Poison]]:
        records: list[Record[Any]] = []
        poison: list[_Poison] = []
        expected = self._sink.event_type
        deserialize = self._deserializer.deserialize
        rows = self._rows
        for message in messages:
            if rows is not None and (row := rows(message)) is not None:
                records.append(row)
                continue
            raw = RawRecord(
                topic=message.topic() or "",
                partition=message.partition() or 0,
                offset=message.offset() or 0,
                key=message.key(),
                value=message.value(),
                headers=headers_of(message),
                timestamp_ms=message.timestamp()[1],
            )
            if raw.value is None:
                poison.append(_Poison(raw, "EmptyValue", "record has no value"))
                continue
            try:
                event = deserialize(raw.value, raw.topic)
            except (DecodeError, UnknownSchemaError, ValidationError) as exc:
                poison.append(_Poison(raw, type(exc).__name__, str(exc)))
                continue
            if not isinstance(event, expected):
                poison.append(
                    _Poison(
                        raw,
                        "WrongEventType",
                        f"{self._sink.name} sink expects {expected.__name__}, "
                        f"got {type(event).__name__}",
                    )
                )
                continue
            records.append(Record(raw, event))
        return records, poison

    def _write_and_commit(self, batch: _Batch) -> _Written:
        """One Postgres transaction: rows, dead letters, offsets; commit.

        Runs on the writer thread (or the loop's, never both at once): it touches the
        database, the dead-letter producer, the sink and metrics — not the consumer, and
        not the loop's state; the batch carries the claims its offsets are fenced by.

        The rows go in without a savepoint of their own first: almost every batch is
        clean, and the savepoint (two more round trips on the writer, the worker's
        bottleneck) is needed only to isolate a bad row. When the database rejects a row
        for its data, that transaction rolls back — nothing else happened in it yet: no
        dead letter sent, no offset moved — and a second one bisects the batch in
        savepoints (:meth:`_write_isolating_poison`).
        """
        if batch.decoded is None:
            batch.decoded = self._decode(batch.messages)
        records, poison = batch.decoded
        positions = batch.positions
        started = time.perf_counter()
        sink = self._sink.name
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    written = self._write_all(conn, records)
                    dead = self._land(conn, batch, poison)
                rejected: list[tuple[Record[Any], psycopg.Error]] = []
            except _RowsRejectedError:
                with conn.transaction():
                    written, rejected = self._write_isolating_poison(conn, records)
                    dead = self._land(conn, batch, poison, rejected)
        self._dead_letters.forget_before(positions)
        self.batches_committed += 1
        good = len(records) - len(rejected)
        self._metrics.rows_written.labels(sink).inc(written)
        self._metrics.duplicates.labels(sink).inc(max(0, good - written))
        self._metrics.batch_size.labels(sink).observe(len(records) + len(poison))
        self._metrics.batch_seconds.labels(sink).observe(time.perf_counter() - started)
        for letter in dead:
            self._metrics.dead_letters.labels(sink, letter.error_class).inc()
        topics = {t for t, _ in positions}
        if len(topics) == 1:
            # The usual case, without a pass over the records on the writer thread.
            self._metrics.records.labels(sink, topics.pop()).inc(len(records) + len(poison))
        else:
            for topic in topics:
                count = sum(1 for r in records if r.raw.topic == topic) + sum(
                    1 for p in poison if p.raw.topic == topic
                )
                self._metrics.records.labels(sink, topic).inc(count)
        if records:
            oldest = min(r.event.occurred_at for r in records)
            self._metrics.event_time_lag.labels(sink).set(
                max(0.0, (datetime.now(UTC) - oldest).total_seconds())
            )
        logger.debug(
            "committed %d records (%d new rows, %d dead letters) up to %s",
            len(records) + len(poison),
            written,
            len(dead),
            positions,
        )
        return _Written(rows=written, dead_letters=len(dead))

    def _write_all(self, conn: psycopg.Connection[Any], records: list[Record[Any]]) -> int:
        """Write ``records`` in the caller's transaction, no savepoint; a row rejected for
        its data raises `_RowsRejectedError` (the transaction is then lost: roll it back)."""
        if not records:
            return 0
        try:
            return self._sink.write(records, conn)
        except psycopg.Error as exc:
            if is_poison(exc):
                raise _RowsRejectedError from exc
            raise

    def _land(
        self,
        conn: psycopg.Connection[Any],
        batch: _Batch,
        poison: list[_Poison],
        rejected: Sequence[tuple[Record[Any], psycopg.Error]] = (),
    ) -> list[_Poison]:
        """After the rows, in their transaction: send the dead letters (``poison`` and the
        ``rejected`` rows) and wait for them, then store the offsets fenced by the batch's
        claims. Returns the dead letters sent."""
        dead = poison + [
            _Poison(record.raw, type(exc).__name__, f"{exc.sqlstate}: {exc}".strip())
            for record, exc in rejected
        ]
        for letter in dead:
            self._dead_letters.send(
                letter.raw, error_class=letter.error_class, message=letter.message
            )
        self._dead_letters.flush(self._config.dead_letter_timeout_s)
        self._offsets.commit(conn, batch.positions, batch.claims)
        return dead

    def _write_isolating_poison(
        self, conn: psycopg.Connection[Any], records: list[Record[Any]]
    ) -> tuple[int, list[tuple[Record[Any], psycopg.Error]]]:
        """Write ``records``; on a data error, bisect in savepoints to find the bad rows."""
        if not records:
            return 0, []
        try:
            with conn.transaction():
                return self._sink.write(records, conn), []
        except psycopg.Error as exc:
            if not is_poison(exc):
                raise
            if len(records) == 1:
                return 0, [(records[0], exc)]
        middle = len(records) // 2
        left_rows, left_bad = self._write_isolating_poison(conn, records[:middle])
        right_rows, right_bad = self._write_isolating_poison(conn, records[middle:])
        return left_rows + right_rows, left_bad + right_bad
