"""The dead-letter topic: where records go that can never be written.

A poison record (undecodable bytes, an unknown schema, a row the database rejects for
its data) is copied to ``<topic>.dlq`` with its original key, value and headers, plus
headers saying where it came from and why it failed. The runtime flushes dead letters
*before* committing the batch's offsets, so a dead letter is never lost; a crash between
the two can repeat one (its source offset header identifies the duplicate).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from consumers.errors import ConsumerError
from consumers.records import RawRecord

logger = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
HEADER_PREFIX = "sidestream.dlq."


class DeadLetterError(ConsumerError):
    """Dead letters could not be delivered; the batch must not be committed."""


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


@dataclass
class _Deliveries:
    pending: int = 0
    errors: list[str] = field(default_factory=list)


class DeadLetters:
    """Sends poison records to their topic's dead-letter topic."""

    def __init__(self, producer: Producer, *, worker: str) -> None:
        self._producer = producer
        self._worker = worker
        self._deliveries = _Deliveries()

    def send(self, raw: RawRecord, *, error_class: str, message: str) -> None:
        headers = [h for h in raw.headers if not h[0].startswith(HEADER_PREFIX + "error")]
        headers += [
            (HEADER_PREFIX + "source.topic", raw.topic.encode()),
            (HEADER_PREFIX + "source.partition", str(raw.partition).encode()),
            (HEADER_PREFIX + "source.offset", str(raw.offset).encode()),
            (HEADER_PREFIX + "error.class", error_class.encode()),
            (HEADER_PREFIX + "error.message", message[:2000].encode()),
            (HEADER_PREFIX + "worker", self._worker.encode()),
            (HEADER_PREFIX + "time", str(int(time.time() * 1000)).encode()),
        ]
        logger.warning("dead-lettering %s: %s: %s", raw.position, error_class, message[:200])
        self._deliveries.pending += 1
        self._producer.produce(
            dead_letter_topic(raw.topic),
            value=raw.value,
            key=raw.key,
            headers=headers,
            on_delivery=self._on_delivery,
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        self._deliveries.pending -= 1
        if err is not None:
            self._deliveries.errors.append(str(err))

    def flush(self, timeout: float) -> None:
        """Wait until every dead letter is acknowledged.

        Raises:
            DeadLetterError: a delivery failed or did not finish within ``timeout``.
        """
        if self._deliveries.pending == 0 and not self._deliveries.errors:
            return
        self._producer.flush(timeout)
        errors, pending = self._deliveries.errors, self._deliveries.pending
        self._deliveries = _Deliveries()
        if errors or pending:
            raise DeadLetterError(
                f"{len(errors)} dead letters failed, {pending} unacknowledged: {errors[:3]}"
            )
