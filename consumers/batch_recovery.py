"""Pause and retry: the state of a batch runtime whose database (or dead-letter topic,
or schema registry) is failing.

A failed batch pauses every partition and is retried with backoff until it lands; the
pause belongs to that batch and ends when it is written, fenced or taken away by a
rebalance (:meth:`_Recovery._resume`). Past the retry deadline the worker reports not
ready, and keeps retrying.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import psycopg
from confluent_kafka import TopicPartition
from psycopg_pool import PoolTimeout

from consumers.batch_polling import _Polling

logger = logging.getLogger(__name__)

# How long one wait for a pooled connection lasts before the stop event is looked at.
_STOP_SLICE_S = 0.25


class _StopRequestedError(Exception):
    """Stop was requested while waiting for the database: give up what was being done."""


class _Recovery(_Polling):
    """Noting failures and recoveries; waiting, paused, before the next attempt."""

    @contextlib.contextmanager
    def _connection(self, timeout_s: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection, like ``pool.connection(timeout_s)`` (default: the pool's
        timeout), but a stop request ends the wait: while the database is away the pool
        would hold a SIGTERM for its whole timeout (10 s).

        Raises:
            _StopRequestedError: stop was requested before a connection came.
            PoolTimeout: none came within ``timeout_s``.
        """
        budget = self._pool.timeout if timeout_s is None else timeout_s
        until = self._clock() + budget
        while True:
            if self._stop_requested.is_set():
                raise _StopRequestedError
            remaining = until - self._clock()
            try:
                conn = self._pool.getconn(timeout=max(0.001, min(remaining, _STOP_SLICE_S)))
                break
            except PoolTimeout:
                if remaining <= _STOP_SLICE_S:
                    raise
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    def _failing(self, exc: BaseException, doing: str, *, since: float | None = None) -> None:
        """Note a transient failure (of work begun at ``since``, default now); past the
        retry deadline, say once that we are unready."""
        now = self._clock()
        if self._failing_since is None:
            self._failing_since = now if since is None else since
        if not self._reported_unready and now - self._failing_since > self._config.retry_deadline_s:
            self._reported_unready = True
            logger.error(
                "%s still failing after %.0fs (%s); reporting not ready, still retrying",
                doing,
                self._config.retry_deadline_s,
                exc,
            )

    def _database_answered(self) -> None:
        """A transaction went through: whatever was failing is not failing now."""
        if self._failing_since is not None and not self._paused:
            logger.info("database reachable again")
        self._failing_since = None
        self._reported_unready = False

    def _wait_for_recovery(self, exc: BaseException, attempt: int, deadline: float | None) -> None:
        self._metrics.retries.labels(self._sink.name).inc()
        if not self._paused:
            self._paused = True
            self._metrics.paused.labels(self._sink.name).set(1)
            self._consumer.pause(self._consumer.assignment())
            logger.warning("writing a batch failed (%s): paused consumption, retrying", exc)
        self._failing(exc, "batch")
        delay = self._config.backoff.delay(attempt)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - self._clock()))
        # Keep polling while we wait: it serves rebalance callbacks and keeps us in the
        # group. Partitions are paused, so nothing new is buffered.
        until = self._clock() + delay
        while True:
            remaining = until - self._clock()
            if remaining <= 0:
                break
            for message in self._consumer.consume(num_messages=1, timeout=min(remaining, 0.5)):
                self._accept(message)

    def _recovered(self) -> None:
        """The batch in hand was written (or fenced): the database answers."""
        self._database_answered()
        self._resume("database reachable again")

    def _resume(self, why: str) -> None:
        """End the pause that belonged to the batch in hand (written, fenced or revoked)."""
        if not self._paused:
            return
        self._paused = False
        self._metrics.paused.labels(self._sink.name).set(0)
        for (topic, partition), offset in self._rewind.items():
            self._consumer.seek(TopicPartition(topic, partition, offset))
        self._rewind.clear()
        # Refused partitions stay paused: they are not ours to read.
        self._consumer.resume(
            [p for p in self._consumer.assignment() if (p.topic, p.partition) in self._claims]
        )
        logger.info("%s: resumed consumption", why)
