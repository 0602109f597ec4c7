"""The batch buffer: polling the consumer into it, and when a batch is due to be cut.

A batch closes at ``max_records``, as soon as a ``consume`` call hands over fewer
records than asked, or ``max_wait`` after its first record (see
:mod:`consumers.runtime`). Records of partitions no longer ours are dropped; while
paused, fetched records are dropped and their partitions noted for a rewind.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Message

from consumers.batch_state import _RuntimeState

logger = logging.getLogger(__name__)

# Longest wait for a batch's first record before the loop looks at stop and checks.
_IDLE_POLL_S = 0.5


class _Polling(_RuntimeState):
    """Filling the buffer (:meth:`_poll`, :meth:`_accept`) and :meth:`_batch_due`."""

    def _poll(self) -> None:
        if not self._buffer:
            # Nothing in hand: wait for a first record (consume returns as soon as it has
            # one), then gather what came with it. Bounded, so a stop is seen promptly.
            idle_wait = min(self._config.max_wait_s, _IDLE_POLL_S)
            for message in self._consumer.consume(num_messages=1, timeout=idle_wait):
                self._accept(message)
            if not self._buffer:
                return
        opened = self._batch_opened_at if self._batch_opened_at is not None else self._clock()
        remaining = max(0.0, opened + self._config.max_wait_s - self._clock())
        wanted = self._config.max_records - len(self._buffer)
        if wanted <= 0:
            return
        # consume() waits for all it was asked, or the timeout: a short linger, so that a
        # short answer means everything immediately available was handed over.
        got = self._consumer.consume(
            num_messages=wanted, timeout=min(self._config.linger_s, remaining)
        )
        for message in got:
            self._accept(message)
        if len(got) < wanted:
            self._drained = True

    def _accept(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                return
            if error.fatal():
                raise KafkaException(error)
            if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                # The broker says a position is outside the log: check every one now.
                self._next_maintenance = 0.0
            logger.warning("consumer error: %s", error)
            return
        key = (message.topic() or "", message.partition() or 0)
        if key not in self._claims:
            return  # a leftover of a partition we no longer own
        if self._paused:
            offset = message.offset() or 0
            self._rewind[key] = min(offset, self._rewind.get(key, offset))
            return
        if not self._buffer:
            self._batch_opened_at = self._clock()
        self._buffer.append(message)

    def _batch_due(self) -> bool:
        if not self._buffer:
            return False
        if len(self._buffer) >= self._config.max_records or self._drained:
            return True
        opened = self._batch_opened_at or self._clock()
        return self._clock() - opened >= self._config.max_wait_s
