"""The dead-letter topic: where records go that can never be written.

A poison record (undecodable bytes, an unknown schema, a row the database rejects for
its data) is copied to ``<topic>.dlq`` with its original key, value and headers, plus
headers saying where it came from and why it failed. The runtime flushes dead letters
*before* committing the batch's offsets, so a dead letter is never lost.

Dead letters always fit: the producer's ``message.max.bytes`` is set to what the
dead-letter topic accepts (:func:`dead_letter_max_bytes`), and a record that would still
be too large with our headers is sent as a **reference** instead — its source position,
size, SHA-256 and first KiB, with ``sidestream.dlq.truncated=true`` — so one oversized
record never stops the batch (the full record stays in its source topic). A batch that
is retried does not send its dead letters again: each one is remembered once Kafka
acknowledged it, until the batch's offsets are committed. A crash between the two can
still repeat one (its source offset header identifies the duplicate; redrive sends each
source record back once).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AdminClient,
    ConfigResource,
)

from consumers.errors import ConsumerError
from consumers.records import Headers, RawRecord

logger = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
HEADER_PREFIX = "sidestream.dlq."
TRUNCATED_HEADER = HEADER_PREFIX + "truncated"
ORIGINAL_SIZE_HEADER = HEADER_PREFIX + "original.size"
ORIGINAL_SHA256_HEADER = HEADER_PREFIX + "original.sha256"

#: Kafka's default ``max.message.bytes`` and librdkafka's ``message.max.bytes``.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
#: How much of an oversized value a reference keeps.
REFERENCE_PREVIEW_BYTES = 1024
# Record and batch framing on top of key, value and headers (generous: a few dozen bytes
# per header plus the batch header), so an estimate below the limit really fits.
_FRAMING_BYTES = 1024
_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE,)  # librdkafka uses it for its own check too

Position = tuple[str, int, int]  # source topic, partition, offset


class DeadLetterError(ConsumerError):
    """Dead letters could not be delivered; the batch must not be committed."""


def dead_letter_headers(
    *,
    topic: str,
    partition: int,
    offset: int,
    error_class: str,
    message: str,
    worker: str,
    time_ms: int,
) -> Headers:
    """The headers a dead letter carries about its source and its failure (one layout,
    read by ``dlq show|redrive`` and the console; the message is cut to 2,000 characters)."""
    return [
        (HEADER_PREFIX + "source.topic", topic.encode()),
        (HEADER_PREFIX + "source.partition", str(partition).encode()),
        (HEADER_PREFIX + "source.offset", str(offset).encode()),
        (HEADER_PREFIX + "error.class", error_class.encode()),
        (HEADER_PREFIX + "error.message", message[:2000].encode()),
        (HEADER_PREFIX + "worker", worker.encode()),
        (HEADER_PREFIX + "time", str(time_ms).encode()),
    ]


def dead_letter_topic(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"


def dead_letter_max_bytes(
    admin: AdminClient,
    topics: list[str],
    *,
    timeout_s: float = 10,
    stop: threading.Event | None = None,
) -> int:
    """The largest record every one of ``topics`` accepts: their ``max.message.bytes``
    where the broker tells, else Kafka's default. A ``stop`` request ends the wait for
    the broker (Kafka's default then): with the brokers away it would hold a SIGTERM
    at start for ``timeout_s``."""
    stop = stop or threading.Event()
    limits = []
    for topic in topics:
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            future = admin.describe_configs([resource])[resource]
            until = time.monotonic() + timeout_s
            while not future.done() and not stop.is_set() and time.monotonic() < until:
                concurrent.futures.wait([future], timeout=min(0.25, timeout_s))
            if not future.done():
                raise TimeoutError
            configs = future.result()
            limits.append(int(configs["max.message.bytes"].value))
        except (KafkaException, KeyError, ValueError, TypeError) as exc:
            logger.info(
                "max.message.bytes of %s unknown (%s); assuming %d",
                topic,
                exc,
                DEFAULT_MAX_MESSAGE_BYTES,
            )
            limits.append(DEFAULT_MAX_MESSAGE_BYTES)
        except TimeoutError:
            limits.append(DEFAULT_MAX_MESSAGE_BYTES)
    return min(limits, default=DEFAULT_MAX_MESSAGE_BYTES)


def _size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    header_bytes = sum(len(name) + len(v or b"") for name, v in headers)
    return len(key or b"") + len(value or b"") + header_bytes + _FRAMING_BYTES


@dataclass
class _Deliveries:
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    too_large: list[tuple[RawRecord, Headers]] = field(default_factory=list)  # to resend


class DeadLetters:
    """Sends poison records to their topic's dead-letter topic.

    Args:
        producer: an idempotent producer whose ``message.max.bytes`` is
            ``max_message_bytes`` (see :func:`dead_letter_max_bytes`).
        worker: recorded in each dead letter's ``sidestream.dlq.worker`` header.
        max_message_bytes: the largest record the dead-letter topics accept; larger
            dead letters are sent as references.
    """

    def __init__(
        self,
        producer: Producer,
        *,
        worker: str,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if max_message_bytes < 4 * _FRAMING_BYTES + REFERENCE_PREVIEW_BYTES:
            raise ValueError(f"max_message_bytes {max_message_bytes} is too small for a reference")
        self._producer = producer
        self._worker = worker
        self._max_bytes = max_message_bytes
        self._deliveries = _Deliveries()
        # Acknowledged dead letters of batches not yet committed: a retry skips them.
        self._sent: set[Position] = set()

    def send(self, raw: RawRecord, *, error_class: str, message: str) -> None:
        """Queue ``raw`` for its dead-letter topic (once per source record and batch)."""
        if (raw.topic, raw.partition, raw.offset) in self._sent:
            logger.debug("%s was dead-lettered already (batch retried)", raw.position)
            return
        headers = [h for h in raw.headers if not h[0].startswith(HEADER_PREFIX)]
        ours = dead_letter_headers(
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            error_class=error_class,
            message=message,
            worker=self._worker,
            time_ms=int(time.time() * 1000),
        )
        size = _size(raw.key, raw.value, headers + ours)
        if size > self._max_bytes:
            self._send_reference(raw, ours, size, f"{error_class}: {message[:200]}")
            return
        logger.warning("dead-lettering %s: %s: %s", raw.position, error_class, message[:200])
        try:
            self._produce(raw, raw.key, raw.value, headers + ours, reference=False)
        except KafkaException as exc:
            if exc.args[0].code() not in _TOO_LARGE:
                raise
            self._send_reference(raw, ours, size, "refused by the producer as too large")

    def _send_reference(self, raw: RawRecord, ours: Headers, size: int, why: str) -> None:
        """Too large to copy: send where it is, its size, digest and first KiB (the
        original headers are left out too: they may be what made it too large)."""
        value = raw.value or b""
        logger.warning(
            "dead-lettering %s as a truncated reference (%d bytes with headers, over the "
            "dead-letter topic's %d; the full record stays at its source): %s",
            raw.position,
            size,
            self._max_bytes,
            why,
        )
        reference: Headers = [
            *ours,
            (TRUNCATED_HEADER, b"true"),
            (ORIGINAL_SIZE_HEADER, str(len(value)).encode()),
            (ORIGINAL_SHA256_HEADER, hashlib.sha256(value).hexdigest().encode()),
        ]
        key = raw.key[:REFERENCE_PREVIEW_BYTES] if raw.key is not None else None
        self._produce(raw, key, value[:REFERENCE_PREVIEW_BYTES], reference, reference=True)

    def _produce(
        self,
        raw: RawRecord,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        *,
        reference: bool,
    ) -> None:
        position = (raw.topic, raw.partition, raw.offset)
        deliveries = self._deliveries

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            deliveries.pending -= 1
            if err is None:
                self._sent.add(position)
            elif err.code() in _TOO_LARGE and not reference:
                # The broker's limit is below what we were told: send a reference instead.
                ours = [h for h in headers if h[0].startswith(HEADER_PREFIX)]
                deliveries.too_large.append((raw, ours))
            else:
                deliveries.errors.append(str(err))

        self._producer.produce(
            dead_letter_topic(raw.topic),
            value=value,
            key=key,
            headers=headers,
            on_delivery=on_delivery,
        )
        deliveries.pending += 1

    def flush(self, timeout: float) -> None:
        """Wait until every dead letter is acknowledged.

        Raises:
            DeadLetterError: a delivery failed or did not finish within ``timeout``.
        """
        if self._deliveries.pending == 0 and not self._deliveries.errors:
            return
        self._producer.flush(timeout)
        if self._deliveries.too_large:
            too_large, self._deliveries.too_large = self._deliveries.too_large, []
            for raw, ours in too_large:
                size = _size(raw.key, raw.value, raw.headers + ours)
                self._send_reference(raw, ours, size, "refused by the broker as too large")
            self._producer.flush(timeout)
        errors, pending = self._deliveries.errors, self._deliveries.pending
        self._deliveries = _Deliveries()
        if errors or pending:
            raise DeadLetterError(
                f"{len(errors)} dead letters failed, {pending} unacknowledged: {errors[:3]}"
            )

    def forget_before(self, positions: Mapping[tuple[str, int], int]) -> None:
        """The batch up to ``positions`` is committed: its dead letters need no memory."""
        self._sent = {
            (topic, partition, offset)
            for topic, partition, offset in self._sent
            if offset >= positions.get((topic, partition), 0)
        }
