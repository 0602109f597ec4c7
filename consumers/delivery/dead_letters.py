"""Failed notifications → the notification dead-letter topic, with their attempt history.

Topic: ``topic_for(NotificationRequested) + ".dlq"`` (``sidestream.notifications.dlq``),
the topic the notifications sink uses for poison records. Records from here are told
apart by their headers (``sidestream.dlq.source.table = notifications``) and value
(JSON, ``content-type: application/json``), where the sink's are the original Avro bytes.

Record::

    key     notification id (UTF-8)
    value   JSON: {"notification": {<every column of the row>},
                   "attempts": [{"attempt": 1, "worker": …, "destination": …,
                                 "started_at": …, "finished_at": …, "latency_ms": …,
                                 "outcome": "transient", "status_code": 503,
                                 "reply": …, "error_class": "http_5xx", "error": …}, …],
                   "failure_reason": "permanent" | "exhausted" | "expired",
                   "dead_lettered_by": <worker>, "dead_lettered_at": <ISO 8601>}
    headers sidestream.dlq.source.table  = notifications
            sidestream.dlq.error.class   = <failure_reason>
            sidestream.dlq.error.message = <last_error>
            sidestream.dlq.worker, sidestream.dlq.time (epoch ms), content-type

``attempts`` holds the latest 50 attempts, oldest first.

Delivery is at least once, driven from Postgres like an outbox: a sweep locks failed rows
whose ``dead_lettered_at`` is NULL, produces them, waits for every acknowledgement and
only then sets ``dead_lettered_at`` in the same transaction. A crash in between repeats
a record (same key); a Kafka outage leaves the rows for the next sweep.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from consumers.delivery.errors import DeadLetterFlushError
from consumers.delivery.store import DeadLetterRow, NotificationStore
from schemas import NotificationRequested
from schemas.topics import DEAD_LETTER_SUFFIX, topic_for

logger = logging.getLogger(__name__)

HEADER_PREFIX = "sidestream.dlq."
SOURCE_TABLE = "notifications"


def notification_dead_letter_topic() -> str:
    """``sidestream.notifications.dlq`` (from ``topics.yaml``)."""
    return topic_for(NotificationRequested) + DEAD_LETTER_SUFFIX


def dead_letter_value(row: DeadLetterRow, *, worker: str) -> bytes:
    """The JSON value of ``row``'s dead-letter record."""
    notification = {k: v for k, v in row.document.items() if k != "history"}
    document = {
        "notification": notification,
        "attempts": row.document.get("history") or [],
        "failure_reason": row.failure_reason,
        "dead_lettered_by": worker,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    return json.dumps(document, default=_json_default, sort_keys=True).encode()


class NotificationDeadLetters:
    """Produces failed notifications to the dead-letter topic (see the module docstring)."""

    def __init__(
        self,
        producer: Producer,
        *,
        worker: str,
        topic: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._producer = producer
        self._worker = worker
        self.topic = topic or notification_dead_letter_topic()
        self._timeout_s = timeout_s

    def serve(self) -> int:
        """Serve the producer's pending events without waiting: librdkafka hands its log
        lines and errors (a broker that is away) to the process's outage reporter only
        from ``poll``/``flush``, and a sweep that finds no rows never flushes. Returns how
        many events were served."""
        return int(self._producer.poll(0))

    async def sweep(self, store: NotificationStore, *, limit: int) -> list[DeadLetterRow]:
        """Dead-letter up to ``limit`` failed rows; returns those now on the topic.

        Raises:
            DeadLetterFlushError: a record failed or was not acknowledged in time; the
                batch's rows stay unmarked and are tried again by a later sweep.
        """
        async with store.dead_letter_batch(limit) as batch:
            if not batch.rows:
                return []
            errors: list[str] = []
            acknowledged: list[uuid.UUID] = []

            def on_delivery(err: KafkaError | None, msg: Message) -> None:
                # Runs on the flushing thread (inside producer.flush).
                if err is not None:
                    errors.append(str(err))
                else:
                    key = msg.key()
                    if key is not None:
                        acknowledged.append(uuid.UUID(key.decode()))

            for row in batch.rows:
                self._producer.produce(
                    self.topic,
                    key=str(row.notification_id).encode(),
                    value=dead_letter_value(row, worker=self._worker),
                    headers=self._headers(row),
                    on_delivery=on_delivery,
                )
            # flush() blocks: keep the event loop (and the deliveries) running meanwhile.
            pending = await asyncio.to_thread(self._producer.flush, self._timeout_s)
            if errors or pending:
                raise DeadLetterFlushError(self.topic, len(errors), pending, errors)
            await batch.mark(acknowledged)
            for row in batch.rows:
                logger.warning(
                    "dead-lettered notification %s (%s) to %s: %s",
                    row.notification_id,
                    row.failure_reason,
                    self.topic,
                    (row.last_error or "")[:200],
                )
            return list(batch.rows)

    def _headers(self, row: DeadLetterRow) -> list[tuple[str, str | bytes | None]]:
        return [
            ("content-type", b"application/json"),
            (HEADER_PREFIX + "source.table", SOURCE_TABLE.encode()),
            (HEADER_PREFIX + "error.class", (row.failure_reason or "failed").encode()),
            (HEADER_PREFIX + "error.message", (row.last_error or "")[:2000].encode()),
            (HEADER_PREFIX + "worker", self._worker.encode()),
            (HEADER_PREFIX + "time", str(int(time.time() * 1000)).encode()),
        ]


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # uuid.UUID, Decimal
