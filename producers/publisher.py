"""`EventPublisher`: validate, encode and hand events to Kafka without blocking the caller.

Lifecycle: build one per process (it owns a librdkafka producer and one small thread),
``publish()`` from any thread, ``close()`` on shutdown (flushes within a timeout).

``publish()`` is fire-and-forget with bounded cost: it validates and encodes the event
(raising `schemas.ValidationError` naming the field; nothing reaches Kafka), then queues
it in librdkafka's local queue. It never waits for the broker. When the queue holds
``max_queue`` messages (the broker is slow or unreachable) it serves pending delivery
reports once, retries once, and then raises `Backpressure` with a ``retry_after`` hint.

Delivery reports are served by a background thread that calls ``poll(0.1)``, not by
``publish()``: a ``poll(0)`` per publish would cost ~1 µs on every call and, worse, would
run a burst of callbacks (metrics, logging, the user's callback) inside whichever request
happened to publish, and would serve nothing at all while no one publishes (leaving
``publish_confirmed`` waiters hanging). The thread sleeps inside librdkafka (GIL released)
and stops on ``close()``.

The per-message callback librdkafka runs only queues the report, and ``publish()`` only
queues the topic; the bookkeeping (the published, delivered and failed counters, the latency
histogram, failure logging, the ``on_delivery`` callback) is done for the whole batch right
after each ``poll()`` and at the end of ``flush()`` and ``close()``, so the
metrics are complete whenever ``flush()`` returns. Booked one by one inside the callback (a
labelled counter increment and a histogram observation per message, each taking a lock,
~2 µs) the poll thread held the GIL for whole bursts of reports, stalling ``publish()``
callers (p99.9 of one call 1.1 ms in the publish bench; 0.15 ms booked in batches).

Failed deliveries are counted, logged with the event id and topic, and passed to the
``on_delivery`` callback. Use the transactional outbox (`producers.Outbox`) when an event
must not be lost; this publisher is for events whose loss is tolerable but must be seen.

A producer that Kafka fenced (``PRODUCER_FENCED``, or any fatal error) can never deliver
again; the thread replaces it with a fresh one and lets the old one report its messages
as failed.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import REGISTRY, CollectorRegistry

from producers._headers import Headers, merge_headers
from producers.delivery import DeliveryReport, event_id_of
from producers.errors import (
    Backpressure,
    BrokersUnreachableError,
    PublisherClosedError,
    PublishError,
)
from producers.metrics import PublisherMetrics
from runtime import Settings
from runtime.clients import producer_config
from schemas import Event, EventSerializer, trace_headers, validate
from schemas.topics import topic_for

__all__ = ["DeliveryCallback", "EventPublisher", "Headers"]

logger = logging.getLogger(__name__)

DeliveryCallback = Callable[[DeliveryReport], None]
"""Called once per message, from the publisher's thread (keep it short, never block)."""

#: Bounds of the ``retry_after`` hint of `Backpressure`, in seconds.
RETRY_AFTER_MIN_S = 0.05
RETRY_AFTER_MAX_S = 5.0

# Errors after which a producer can never deliver again (besides err.fatal()).
_FENCING_ERRORS = frozenset(
    {KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError._FENCED}
)
# Config keys the publisher sets itself: passing them would silently break it.
_RESERVED_KEYS = ("on_delivery", "dr_cb", "dr_msg_cb", "error_cb", "delivery.report.only.error")
_RATE_SAMPLE_EVERY_S = 0.25
_RATE_WINDOW = 20  # samples: the delivery rate is measured over the last ~5 s
_MIN_REBUILD_INTERVAL_S = 1.0


class _FailureLog:
    """Logs delivery failures one by one, but at most `burst` per `interval_s`: a broker
    outage fails every queued message at once, and 100k identical lines help nobody."""

    def __init__(self, *, burst: int = 20, interval_s: float = 10.0) -> None:
        self._burst = burst
        self._interval_s = interval_s
        self._window_start = 0.0
        self._logged = 0
        self._suppressed = 0
        self._lock = threading.Lock()

    def failed(self, event_id: str | None, topic: str, error: KafkaError) -> None:
        with self._lock:
            self._roll(time.monotonic())
            if self._logged >= self._burst:
                self._suppressed += 1
                return
            self._logged += 1
        logger.warning("event %s not delivered to %s: %s", event_id, topic, error.str())

    def tick(self) -> None:
        """Report what was suppressed once its window is over (from the publisher's thread)."""
        if self._suppressed:
            with self._lock:
                self._roll(time.monotonic())

    def _roll(self, now: float) -> None:
        if now - self._window_start < self._interval_s:
            return
        if self._suppressed:
            logger.warning(
                "%d more delivery failures in %.0fs were not logged one by one",
                self._suppressed,
                self._interval_s,
            )
        self._window_start, self._logged, self._suppressed = now, 0, 0


class _LatencyBatch:
    """Delivery latencies counted into a histogram child's buckets in bulk.

    ``Histogram.observe`` takes the bucket lock and walks the bounds in Python (~1.2 µs) per
    message; here each latency is one C bisect and the child is updated once per batch, with
    exactly what ``observe`` would have counted (the first bucket whose bound is >= the value).
    It writes the child's private ``_buckets``/``_sum`` values (prometheus_client has no bulk
    observe); tests/producers/test_publisher.py checks the result against ``observe``.
    """

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def add(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, seconds)] += 1
        self._sum += seconds

    def flush(self) -> None:
        """Add what was counted to the histogram, and start over."""
        counts = self._counts
        if not any(counts):
            return
        for index, count in enumerate(counts):
            if count:
                self._child._buckets[index].inc(count)
        self._child._sum.inc(self._sum)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0


_Report = tuple[int, KafkaError | None, Message]


class EventPublisher:
    """Publishes typed events to Kafka; one per process, safe to share between threads.

    Pass `settings` (the producer config comes from ``runtime.clients.producer_config``:
    idempotent, acks=all, lz4, small linger) and/or `config`, librdkafka properties that
    override it — or, without settings, a complete producer config. `max_queue` bounds the
    local queue (``queue.buffering.max.messages``). `producer` names the service, in
    metrics and the Kafka ``client.id``. `on_delivery` gets a `DeliveryReport` for every
    message, from the publisher's thread.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        config: Mapping[str, Any] | None = None,
        serializer: EventSerializer | None = None,
        registry: CollectorRegistry = REGISTRY,
        producer: str = "sidestream",
        on_delivery: DeliveryCallback | None = None,
        max_queue: int = 100_000,
        poll_interval_s: float = 0.1,
        retire_timeout_s: float = 30.0,
    ) -> None:
        if settings is None and config is None:
            raise ValueError("pass settings, a producer config, or both")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        if not producer:
            raise ValueError("producer (the service name) must not be empty")
        if not 0 < poll_interval_s <= 1:
            raise ValueError(f"poll_interval_s must be in (0, 1], got {poll_interval_s}")
        self._config = self._build_config(settings, config, max_queue=max_queue, name=producer)
        self._serialize = (serializer or EventSerializer()).serialize
        self._name = producer
        self._user_callback = on_delivery
        self._poll_interval_s = poll_interval_s
        self._retire_timeout_s = retire_timeout_s

        metrics = PublisherMetrics.for_registry(registry)
        self._metrics = metrics
        self._latency = _LatencyBatch(metrics.delivery_latency.labels(producer))
        self._rebuilds = metrics.producer_rebuilds.labels(producer)
        # Pre-bound label children, per topic: the hot path does one dict lookup.
        self._published: dict[str, Any] = {}
        self._delivered: dict[str, Any] = {}
        self._failed: dict[str, Any] = {}
        self._topics: dict[type[Event], str] = {}
        self._failure_log = _FailureLog()
        # Reports queued by librdkafka's callbacks (deque operations are atomic), booked in
        # batches by _book_reports() under _book_lock; bounded by the messages in flight.
        self._reports: collections.deque[_Report] = collections.deque()
        # The topic of each queued message, counted into `published` with the reports.
        self._queued_topics: collections.deque[str] = collections.deque()
        self._book_lock = threading.Lock()

        self._generation = 0
        self._producer = self._new_producer()
        self._produce = self._producer.produce
        self._retired: list[tuple[Producer, float]] = []
        self._swap_lock = threading.Lock()
        self._needs_rebuild = threading.Event()
        self._last_rebuild = 0.0
        self._delivered_total = 0
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(
            maxlen=_RATE_WINDOW
        )
        self._closed = False
        self._stopping = threading.Event()
        metrics.queue_depth.labels(producer).set_function(self.queue_depth)
        self._thread = threading.Thread(
            target=self._serve, name=f"publisher-{producer}", daemon=True
        )
        self._thread.start()

    # --- public ------------------------------------------------------------------------
    def publish(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: bytes | str | None = None,
        traceparent: str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Validate, encode and queue `event`; returns at once (never waits for Kafka).

        `topic` defaults to the event type's topic (``schemas/topics.yaml``), `key` to
        ``event.key``; `traceparent` becomes the W3C ``traceparent`` header. `on_delivery`
        is called for this message only, besides the publisher's own callback.

        Raises:
            schemas.ValidationError: the event does not match its schema (names the field).
            Backpressure: the local queue is full; nothing was queued.
            PublisherClosedError: after `close()`.
            PublishError: librdkafka refused the message (e.g. too large).
        """
        if self._closed:
            raise PublisherClosedError(f"publisher {self._name} is closed")
        if topic is None:
            topic = self._topics.get(type(event)) or self._topic_of(event)
        value = self._serialize(event, topic)
        if key is None:
            key = event.key
        if headers is not None:
            kafka_headers: list[tuple[str, bytes | str | None]] | None = merge_headers(
                traceparent, headers
            )
        elif traceparent is not None:
            # list[tuple[str, bytes]] is a valid headers list (mypy: lists are invariant)
            kafka_headers = trace_headers(traceparent)  # type: ignore[assignment]
        else:
            kafka_headers = None
        try:
            if on_delivery is not None:
                self._produce(
                    topic,
                    value,
                    key,
                    on_delivery=self._callback_for(on_delivery),
                    headers=kafka_headers,
                )
            elif kafka_headers is None:
                self._produce(topic, value, key)
            else:
                self._produce(topic, value, key, headers=kafka_headers)
        except BufferError:
            self._produce_when_full(event, topic, value, key, kafka_headers, on_delivery)
        except RuntimeError:
            if self._closed:
                raise PublisherClosedError(f"publisher {self._name} is closed") from None
            # The producer was replaced, and the old one closed, while this call ran: once
            # more with the current one.
            self._produce_when_full(event, topic, value, key, kafka_headers, on_delivery)
        except KafkaException as exc:
            raise PublishError(
                f"cannot publish event {event.event_id} to {topic}: {exc.args[0].str()}",
                topic=topic,
                event_id=event.event_id,
            ) from exc
        # Counted with the delivery reports (a labelled counter's inc() takes a lock: ~0.5 µs,
        # 8% of this call); the deque append is atomic and ~40 ns.
        self._queued_topics.append(topic)

    def check_brokers(self, timeout: float = 5.0) -> None:
        """Wait up to `timeout` seconds for the brokers to answer a metadata request.

        `publish()` never waits for Kafka, so a caller that is about to publish a stream
        (a load generator) calls this first: with the brokers away it fails once, within
        `timeout`, instead of queueing events that can only fail after
        ``message.timeout.ms``.

        Raises:
            BrokersUnreachableError: no broker answered in time (from librdkafka's
                ``KafkaException``).
        """
        try:
            self._producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0]
            raise BrokersUnreachableError(
                bootstrap=str(self._config.get("bootstrap.servers", "?")),
                timeout_s=timeout,
                error=error.str() if isinstance(error, KafkaError) else str(exc),
            ) from exc

    def queue_depth(self) -> int:
        """Messages queued or in flight, whose delivery is not yet reported."""
        return len(self._producer) + sum(len(old) for old, _ in self._retired)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to `timeout` seconds for every queued message to be reported; returns
        how many are still waiting (0: all delivered or failed)."""
        deadline = time.monotonic() + timeout
        remaining = self._producer.flush(timeout)
        for old, _ in list(self._retired):
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nothing left in it
                remaining += old.flush(max(0.0, deadline - time.monotonic()))
        # flush() served the reports; book them now, so the metrics and callbacks are
        # complete when it returns.
        self._book_reports()
        return int(remaining)

    def close(self, timeout: float = 10.0) -> int:
        """Stop accepting events, flush for up to `timeout` seconds, stop the thread.

        Returns the number of messages that were still undelivered and were dropped
        (reported as failed). Calling it again does nothing.
        """
        if self._closed:
            return 0
        self._closed = True
        remaining = self.flush(timeout)
        self._stopping.set()
        self._thread.join(timeout=max(1.0, 5 * self._poll_interval_s))
        producers = [self._producer, *(old for old, _ in self._retired)]
        self._retired = []
        if remaining:
            logger.warning(
                "publisher %s closed with %d undelivered messages; dropping them",
                self._name,
                remaining,
            )
        for producer in producers:
            if len(producer):
                producer.purge()
                producer.poll(0)  # report the purged messages as failed
            producer.close()
        self._book_reports()
        # Release the gauge's reference to this publisher.
        self._metrics.queue_depth.labels(self._name).set_function(lambda: 0)
        return remaining

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- publishing, off the hot path ----------------------------------------------------
    def _topic_of(self, event: Event) -> str:
        validate(event)  # not an event class at all: ValidationError, like the serializer
        topic = topic_for(type(event))
        self._topics[type(event)] = topic
        return topic

    def _child(self, family: Any, cache: dict[str, Any], topic: str) -> Any:
        return cache.setdefault(topic, family.labels(self._name, topic))

    def _produce_when_full(
        self,
        event: Event,
        topic: str,
        value: bytes,
        key: bytes | str,
        headers: list[tuple[str, bytes | str | None]] | None,
        on_delivery: DeliveryCallback | None,
    ) -> None:
        # Serve pending reports once (frees queue slots of delivered messages), retry once.
        self._producer.poll(0)
        self._book_reports()
        try:
            if on_delivery is None:
                self._produce(topic, value, key, headers=headers)
            else:
                self._produce(
                    topic, value, key, on_delivery=self._callback_for(on_delivery), headers=headers
                )
        except BufferError:
            self._metrics.backpressure.labels(self._name, topic).inc()
            raise Backpressure(
                topic=topic, retry_after=self._retry_after(), queue_depth=self.queue_depth()
            ) from None

    def _retry_after(self) -> float:
        """Seconds until the queue has room: its depth over the recent delivery rate."""
        samples = tuple(self._rate_samples)
        depth = self.queue_depth()
        if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
            return RETRY_AFTER_MAX_S
        rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
        if rate <= 0:
            return RETRY_AFTER_MAX_S  # nothing delivered lately: the broker is away
        return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, depth / rate))

    # --- delivery reports (the publisher's thread, or flush()) --------------------------
    def _callback_for(
        self, callback: DeliveryCallback
    ) -> Callable[[KafkaError | None, Message], None]:
        generation = self._generation

        def report(error: KafkaError | None, message: Message) -> None:
            # A per-message callback replaces the producer's: book this report (and any
            # queued before it) first, so the metrics include it when `callback` runs.
            self._reports.append((generation, error, message))
            self._book_reports()
            try:
                callback(DeliveryReport.from_message(error, message))
            except Exception:
                logger.exception("on_delivery callback of one message raised")

        return report

    def _on_delivery(self, generation: int, error: KafkaError | None, message: Message) -> None:
        # librdkafka calls this once per message, taking the GIL each time: only queue the
        # report (booked in batches by _book_reports, right after the poll that served it).
        self._reports.append((generation, error, message))

    def _book_reports(self) -> None:
        """Count, observe and log the queued delivery reports, then pass them to the
        publisher's ``on_delivery`` callback (outside the lock: it may call ``flush()``)."""
        reports = self._reports
        if not reports and not self._queued_topics:
            return
        delivered: dict[str, int] = {}
        passed: list[DeliveryReport] = []
        with self._book_lock:
            # Published first: a message is counted as published before its report.
            self._book_published()
            # Runs after poll()/flush(): an exception here would surface in whoever polled.
            for _ in range(len(reports)):
                generation, error, message = reports.popleft()
                try:
                    if error is None:
                        topic = message.topic() or ""
                        delivered[topic] = delivered.get(topic, 0) + 1
                        latency = message.latency()
                        if latency is not None:
                            self._latency.add(latency)
                    else:
                        self._on_failure(generation, error, message)
                    if self._user_callback is not None:
                        passed.append(DeliveryReport.from_message(error, message))
                except Exception:
                    logger.exception("delivery report handling raised")
            try:
                for topic, count in delivered.items():
                    counter = self._delivered.get(topic)
                    if counter is None:
                        counter = self._child(self._metrics.delivered, self._delivered, topic)
                    counter.inc(count)
                    self._delivered_total += count
                self._latency.flush()
            except Exception:
                logger.exception("delivery report handling raised")
        if self._user_callback is not None:
            for report in passed:
                try:
                    self._user_callback(report)
                except Exception:
                    logger.exception("on_delivery callback of the publisher raised")

    def _book_published(self) -> None:
        queued = self._queued_topics
        published: dict[str, int] = {}
        try:
            for _ in range(len(queued)):
                topic = queued.popleft()
                published[topic] = published.get(topic, 0) + 1
        finally:
            for topic, count in published.items():
                counter = self._published.get(topic)
                if counter is None:
                    counter = self._child(self._metrics.published, self._published, topic)
                counter.inc(count)

    def _on_failure(self, generation: int, error: KafkaError, message: Message) -> None:
        topic = message.topic() or ""
        counter = self._failed.get(topic)
        if counter is None:
            counter = self._child(self._metrics.failed, self._failed, topic)
        counter.inc()
        value = message.value()
        event_id = event_id_of(value) if isinstance(value, bytes) else None
        self._failure_log.failed(event_id, topic, error)
        if generation == self._generation and (error.fatal() or error.code() in _FENCING_ERRORS):
            self._needs_rebuild.set()

    def _on_error(self, generation: int, error: KafkaError) -> None:
        if error.fatal():
            logger.error("producer %s: fatal error %s; replacing it", self._name, error.str())
            if generation == self._generation:
                self._needs_rebuild.set()
        else:
            # Transport errors (broker down, ...): librdkafka keeps retrying by itself. The
            # factories' reporter (runtime.outages) turns them into one rate-limited line.
            shared = self._config.get("error_cb")
            if callable(shared):
                shared(error)
            else:
                logger.warning("producer %s: %s", self._name, error.str())

    # --- the background thread -------------------------------------------------------------
    def _serve(self) -> None:
        next_sample = 0.0
        while not self._stopping.is_set():
            try:
                self._producer.poll(self._poll_interval_s)
                self._book_reports()
                now = time.monotonic()
                if now >= next_sample:
                    self._rate_samples.append((now, self._delivered_total))
                    next_sample = now + _RATE_SAMPLE_EVERY_S
                if self._retired:
                    self._serve_retired(now)
                self._failure_log.tick()
                if (
                    self._needs_rebuild.is_set()
                    and now - self._last_rebuild >= _MIN_REBUILD_INTERVAL_S
                ):
                    self._rebuild(now)
            except Exception:
                logger.exception("publisher %s: serving delivery reports failed", self._name)
                self._stopping.wait(self._poll_interval_s)

    def _new_producer(self) -> Producer:
        generation = self._generation
        config = {
            **self._config,
            # One callable per producer (not per message): it tells reports of a replaced
            # producer from those of the current one.
            "on_delivery": functools.partial(self._on_delivery, generation),
            "error_cb": functools.partial(self._on_error, generation),
        }
        return Producer(config)

    def _rebuild(self, now: float) -> None:
        with self._swap_lock:
            self._needs_rebuild.clear()
            self._last_rebuild = now
            old = self._producer
            self._generation += 1
            self._producer = self._new_producer()
            self._produce = self._producer.produce
            # Queued messages of a fenced producer can only fail: fail them now. Those in
            # flight may still be acknowledged; the old producer is polled until they are.
            old.purge(in_queue=True, in_flight=False, blocking=False)
            self._retired.append((old, now + self._retire_timeout_s))
        self._rebuilds.inc()
        logger.warning(
            "producer %s was fenced or failed fatally; replaced it (generation %d)",
            self._name,
            self._generation,
        )

    def _serve_retired(self, now: float) -> None:
        keep = []
        for old, deadline in self._retired:
            old.poll(0)
            self._book_reports()
            if len(old) and now < deadline:
                keep.append((old, deadline))
                continue
            if len(old):
                old.purge()
                old.poll(0)
                self._book_reports()
            old.close()
        self._retired = keep

    # --- configuration -------------------------------------------------------------------
    @staticmethod
    def _build_config(
        settings: Settings | None,
        config: Mapping[str, Any] | None,
        *,
        max_queue: int,
        name: str,
    ) -> dict[str, Any]:
        given = dict(config or {})
        reserved = [key for key in _RESERVED_KEYS if key in given]
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: set by EventPublisher itself; "
                "pass on_delivery= to the publisher instead"
            )
        queued = given.get("queue.buffering.max.messages")
        if queued is not None and int(queued) != max_queue:
            raise ValueError(
                f"contradictory queue bounds: config says queue.buffering.max.messages={queued}"
                f", max_queue={max_queue}; pass only max_queue"
            )
        merged = producer_config(settings, **given) if settings is not None else given
        if "bootstrap.servers" not in merged:
            raise ValueError("the producer config has no bootstrap.servers")
        merged["queue.buffering.max.messages"] = max_queue
        merged.setdefault("client.id", f"sidestream-{name}")
        return merged
