"""The writer thread and what it is handed: a batch cut under its partitions' claims.

:class:`_Batch` is what the loop cuts from its buffer (with, once decoded, its records
and the :class:`_Poison` set aside); :class:`_Writer` writes one batch at a time on its
own thread (a queue of one) and hands back a :class:`_Written` or whatever the write
raised. The loop (:mod:`consumers.runtime`) decides what an outcome means.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from consumers.offsets import Claim, TopicPartitionKey
from consumers.records import RawRecord, Record


@dataclass(slots=True)
class _Poison:
    raw: RawRecord
    error_class: str
    message: str


@dataclass(slots=True)
class _Batch:
    """Records cut from the buffer under ``claims`` (each partition's claim when it was
    cut): only while those claims still stand may the batch be written."""

    messages: list[Message]
    claims: dict[TopicPartitionKey, Claim]
    # The next offset of each partition once the batch is committed.
    positions: dict[TopicPartitionKey, int]
    # None until decoded (a registry outage can leave it so until the retry decodes it).
    decoded: tuple[list[Record[Any]], list[_Poison]] | None = None

    def only(self, keys: set[TopicPartitionKey]) -> _Batch:
        """The part of this batch that belongs to the partitions ``keys``."""

        def ours(topic: str | None, partition: int | None) -> bool:
            return (topic or "", partition or 0) in keys

        decoded = None
        if self.decoded is not None:
            records, poison = self.decoded
            decoded = (
                [r for r in records if ours(r.raw.topic, r.raw.partition)],
                [p for p in poison if ours(p.raw.topic, p.raw.partition)],
            )
        return _Batch(
            [m for m in self.messages if ours(m.topic(), m.partition())],
            {k: c for k, c in self.claims.items() if k in keys},
            {k: n for k, n in self.positions.items() if k in keys},
            decoded,
        )


@dataclass(frozen=True, slots=True)
class _Written:
    """What the writer reports of a committed batch."""

    rows: int
    dead_letters: int


class _Writer:
    """One thread writing the batches it is handed, one at a time: a queue of one.

    The loop hands a batch over with :meth:`submit` only after it took the previous
    batch's outcome with :meth:`outcome`, so at most one batch is being written and
    batches commit in the order they were read. The thread runs ``write`` (Postgres and
    the dead-letter producer), never the Kafka consumer; whatever ``write`` raises is the
    outcome, for the loop to act on.
    """

    def __init__(self, write: Callable[[_Batch], _Written], *, name: str) -> None:
        self._write = write
        self._changed = threading.Condition()
        self._job: _Batch | None = None
        self._result: _Written | BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, batch: _Batch) -> None:
        with self._changed:
            if self._job is not None or self._result is not None:
                raise RuntimeError("the writer holds a batch already (a queue of one)")
            self._job = batch
            self._changed.notify_all()

    def outcome(self, timeout: float | None) -> _Written | BaseException | None:
        """The handed-over batch's outcome, waiting up to ``timeout`` seconds (None:
        until it is written); None if it is not written yet."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._result is not None, timeout):
                return None
            result, self._result = self._result, None
            return result

    def close(self, timeout: float) -> None:
        """Let the thread end once its batch (if any) is written; wait up to ``timeout``.
        A daemon: a write still running past that (a hung database) does not hold up the
        process; should it still commit, it does so before the partitions' next owner
        claims them, or is fenced."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._job is not None or self._closed)
                job = self._job
                if job is None:
                    return
            result: _Written | BaseException
            try:
                result = self._write(job)
            except BaseException as exc:  # handed to the loop, which decides what it means
                result = exc
            # Not kept while this thread waits for the next batch: the written batch's
            # records and rows (~3.7 MiB at 5,000 audit records) would stay alive, idle.
            del job
            with self._changed:
                self._job, self._result = None, result
                self._changed.notify_all()
            del result
