"""Traffic for the scenarios, on threads so a scenario can inject faults meanwhile: the
synthetic event stream published to Kafka, the same events written through the
transactional outbox, and a census of what actually reached a topic.

Every event comes from :class:`producers.synthetic.SyntheticEvents` (the one generator):
published by :func:`producers.synthetic.publish_load`, or added with
:meth:`producers.Outbox.add` in Postgres transactions.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from devtools.chaos.errors import StalledError
from producers import Outbox
from producers.delivery import event_id_of
from producers.synthetic import KINDS, Kind, LoadResult, SyntheticEvents, publish_load
from runtime import Settings
from runtime.clients import consumer_config, postgres_connect

__all__ = ["LoadThread", "OutboxWriter", "TopicCensus", "topic_census"]


class LoadThread:
    """``count`` synthetic events of ``kind`` published to ``topic`` at ``rate`` per
    second, on a daemon thread.

    Args:
        settings: the Kafka to publish to.
        topic: where every event goes (overrides ``schemas/topics.yaml``).
        count: how many events.
        rate: events per second (paced; a stall is caught up afterwards).
        seed: the stream's seed.
        kind: the event kind (the sinks take one kind each).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str,
        count: int,
        rate: float,
        seed: int,
        kind: Kind = "audit",
    ) -> None:
        self.count = count
        self._settings = settings
        self._topic = topic
        self._rate = rate
        self._seed = seed
        self._kind: Kind = kind
        self.result: LoadResult | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-load", daemon=True)

    def _run(self) -> None:
        try:
            self.result = publish_load(
                self._settings,
                rate=self._rate,
                count=self.count,
                duration=None,
                kinds=(self._kind,),
                seed=self._seed,
                topic_override={self._kind: self._topic},
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> LoadThread:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout_s: float) -> LoadResult:
        """Wait for the stream to end; what it published.

        Raises:
            StalledError: it did not end within ``timeout_s``.
            Exception: whatever stopped the publisher.
        """
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise StalledError(f"publishing {self.count:,} events", timeout_s)
        if self.error is not None:
            raise self.error
        assert self.result is not None  # set whenever the thread ended without error
        return self.result


class OutboxWriter:
    """``count`` synthetic events of ``kind`` added to the outbox, ``per_transaction`` per
    Postgres transaction, at ``rate`` events per second, on a daemon thread.

    A transaction that fails is retried with the same events (bounded by
    ``retry_for_s``); :attr:`committed` counts events whose transaction committed, and
    :attr:`timeline` records ``(time.monotonic(), committed)`` after each commit, so a
    scenario can tell how many writes went through during a fault.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str,
        topic: str,
        count: int,
        rate: float,
        seed: int,
        kind: Kind = "audit",
        per_transaction: int = 10,
        retry_for_s: float = 60.0,
    ) -> None:
        if count < 1 or rate <= 0 or per_transaction < 1:
            raise ValueError("count, rate and per_transaction must be positive")
        self.count = count
        self.committed = 0
        self.failed_transactions = 0
        self.timeline: list[tuple[float, int]] = []
        self.error: BaseException | None = None
        self._settings = settings
        self._schema = schema
        self._topic = topic
        self._rate = rate
        self._per_transaction = per_transaction
        self._retry_for_s = retry_for_s
        mix = [1.0 if k == kind else 0.0 for k in KINDS]
        self._events = SyntheticEvents(seed=seed, mix=mix, producer="sidestream-chaos")
        self._outbox = Outbox(schema=schema)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-outbox", daemon=True)

    def start(self) -> OutboxWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop early (the transaction in hand finishes)."""
        self._stop.set()

    def committed_between(self, start: float, end: float) -> int:
        """Events committed in the ``time.monotonic()`` window ``[start, end]``."""
        before = max((n for t, n in self.timeline if t < start), default=0)
        upto = max((n for t, n in self.timeline if t <= end), default=0)
        return upto - before

    def join(self, timeout_s: float) -> int:
        """Wait for the writer to finish; how many events committed.

        Raises:
            StalledError: not finished within ``timeout_s``.
            Exception: what stopped the writer (after ``retry_for_s`` of failures).
        """
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise StalledError(f"writing {self.count:,} events to the outbox", timeout_s)
        if self.error is not None:
            raise self.error
        return self.committed

    def _run(self) -> None:
        try:
            self._write_all()
        except BaseException as exc:
            self.error = exc

    def _write_all(self) -> None:
        started = time.monotonic()
        conn: psycopg.Connection[Any] | None = None
        try:
            while self.committed < self.count and not self._stop.is_set():
                size = min(self._per_transaction, self.count - self.committed)
                batch = list(self._events.take(size))
                failing_since: float | None = None
                while not self._stop.is_set():
                    try:
                        if conn is None or conn.closed:
                            conn = postgres_connect(
                                self._settings,
                                schema=self._schema,
                                autocommit=True,
                                connect_timeout=3,
                            )
                        with conn.transaction():
                            for event in batch:
                                self._outbox.add(conn, event, topic=self._topic)
                        break
                    except psycopg.OperationalError:
                        self.failed_transactions += 1
                        now = time.monotonic()
                        failing_since = failing_since or now
                        if now - failing_since > self._retry_for_s:
                            raise
                        if conn is not None:
                            conn.close()
                        time.sleep(0.2)
                else:
                    return
                self.committed += size
                now = time.monotonic()
                self.timeline.append((now, self.committed))
                # Absolute pacing: event n is due at start + n / rate.
                delay = started + self.committed / self._rate - now
                if delay > 0:
                    self._stop.wait(delay)
        finally:
            if conn is not None:
                conn.close()


@dataclass(frozen=True, slots=True)
class TopicCensus:
    """What a topic holds: messages, and distinct event ids among them."""

    messages: int
    distinct: int

    @property
    def resent(self) -> int:
        """Copies of events already in the topic (at-least-once re-sends)."""
        return self.messages - self.distinct


def topic_census(
    settings: Settings,
    topic: str,
    *,
    at_least: int = 0,
    timeout_s: float = 120.0,
    quiet_s: float = 1.0,
) -> TopicCensus:
    """Read ``topic`` from the beginning of every partition and count its messages and
    distinct event ids (read from the values' first field, no full decode).

    The end of a topic is found by reading — no message for ``quiet_s`` after at least
    ``at_least`` messages — because the local broker's high watermark reads short.

    Raises:
        StalledError: ``at_least`` messages were not there within ``timeout_s``.
    """
    consumer = Consumer(
        consumer_config(
            settings,
            f"chaos-census-{uuid.uuid4().hex[:10]}",
            **{"fetch.wait.max.ms": 50, "enable.partition.eof": False},
        )
    )
    messages = 0
    ids: set[str] = set()
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while True:
            now = time.monotonic()
            if messages >= at_least and now - last_seen >= quiet_s:
                return TopicCensus(messages, len(ids))
            if now >= deadline:
                raise StalledError(f"{at_least:,} messages in {topic}", timeout_s, messages)
            batch = consumer.consume(num_messages=10_000, timeout=0.2)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                messages += 1
                value = message.value()
                event_id = event_id_of(value) if isinstance(value, bytes) else None
                if event_id is not None:
                    ids.add(event_id)
            if batch:
                last_seen = time.monotonic()
    finally:
        consumer.close()
