"""Benchmark of the publish hot path, for the bench harness (``measure_publish``).

Two numbers matter:

- the cost of one ``publish()`` call as the caller sees it (validation, Avro encoding,
  ``produce()`` into the local queue, counting), per call: median and p99;
- delivered throughput: events acknowledged by the broker per second, from the first
  publish to the end of ``flush()``, next to the raw ``Producer.produce`` of the same,
  pre-encoded values with the same producer config, keys and topic (the ratio is what
  the publisher costs end to end).

Run with ``sidestream bench --section publish``.
"""

from __future__ import annotations

import gc
import statistics
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from devtools.bench.harness import BenchContext, Figure, Target, percentile
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticEvents
from runtime import Settings, new_registry
from runtime.clients import producer_config
from schemas import AuditEvent, EventSerializer

SECTION = "publish"

__all__ = ["measure_publish", "run"]

_DISTINCT_EVENTS = 1000


def _measure_publisher(
    settings: Settings, topic: str, n: int, events: list[AuditEvent]
) -> dict[str, float]:
    publisher = EventPublisher(
        settings=settings, registry=new_registry(), producer="bench", max_queue=n + 10_000
    )
    try:
        for event in events:  # warm up: topic metadata, code paths, label children
            publisher.publish(event, topic=topic)
        publisher.flush(30)
        publish = publisher.publish
        clock = time.perf_counter_ns
        samples = [0] * n
        count = len(events)
        gc.disable()  # a collection inside one call says nothing about publish()
        try:
            started = time.perf_counter()
            for i in range(n):
                event = events[i % count]
                t0 = clock()
                publish(event, topic=topic)
                samples[i] = clock() - t0
            queued_s = time.perf_counter() - started
        finally:
            gc.enable()
        left = publisher.flush(60)
        delivered_s = time.perf_counter() - started
    finally:
        publisher.close(10)
    samples.sort()
    return {
        "publish_median_us": samples[n // 2] / 1000,
        "publish_p99_us": percentile(samples, 0.99) / 1000,
        "publish_p999_us": percentile(samples, 0.999) / 1000,
        "publish_mean_us": statistics.fmean(samples) / 1000,
        "publish_calls_per_s": n / queued_s,
        "publisher_delivered_per_s": (n - left) / delivered_s,
        "publisher_undelivered": float(left),
    }


def _measure_raw(
    settings: Settings, topic: str, n: int, values: list[bytes], keys: list[bytes]
) -> dict[str, float]:
    delivered = 0

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    config: dict[str, Any] = producer_config(
        settings, **{"queue.buffering.max.messages": n + 10_000, "on_delivery": on_delivery}
    )
    producer = Producer(config)
    stop = threading.Event()

    def serve() -> None:  # the same background polling the publisher does
        while not stop.is_set():
            producer.poll(0.1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for value, key in zip(values, keys, strict=True):
            producer.produce(topic, value, key)
        producer.flush(30)
        delivered = 0
        produce = producer.produce
        count = len(values)
        started = time.perf_counter()
        for i in range(n):
            produce(topic, values[i % count], keys[i % count])
        left = producer.flush(60)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        thread.join(5)
        producer.close()
    return {"raw_delivered_per_s": (n - left) / elapsed}


def measure_publish(settings: Settings, topic: str, n: int, *, seed: int = 7) -> dict[str, float]:
    """Publish `n` AuditEvents to `topic` (which must exist), then `n` pre-encoded values
    with a raw producer; return per-call and throughput figures.

    Keys: ``publish_median_us``, ``publish_p99_us``, ``publish_p999_us``,
    ``publish_mean_us``, ``publish_calls_per_s``, ``publisher_delivered_per_s``,
    ``raw_delivered_per_s``, ``throughput_ratio`` (publisher / raw), and
    ``publisher_undelivered`` (should be 0). Writes 2·n messages (plus warm-up) to `topic`.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    events: list[AuditEvent] = list(SyntheticEvents(seed=seed).take(_DISTINCT_EVENTS, "audit"))  # type: ignore[arg-type]
    serializer = EventSerializer()
    values = [serializer.serialize(event, topic) for event in events]
    # The same keys as publish() uses (event.key: the tenant, over every partition). One key
    # for all would put every message in one partition: fewer, larger batches, and a
    # cheaper baseline than the work the publisher does.
    keys = [event.key for event in events]
    result = _measure_publisher(settings, topic, n, events)
    result.update(_measure_raw(settings, topic, n, values, keys))
    result["throughput_ratio"] = result["publisher_delivered_per_s"] / result["raw_delivered_per_s"]
    return result


def run(ctx: BenchContext) -> list[Figure]:
    n = ctx.sizes.pick(20_000, 200_000)
    topic = ctx.topic("publish")
    with ctx.console.status(f"publishing {n:,} events, then {n:,} pre-encoded values..."):
        result = measure_publish(ctx.settings, topic, n, seed=ctx.seed)
    return [
        Figure(
            SECTION,
            "publish() median",
            result["publish_median_us"],
            "µs",
            target=Target("<=", 8, on="value"),
            note="validate + Avro + produce",
        ),
        Figure(
            SECTION,
            "publish() p99",
            result["publish_p99_us"],
            "µs",
            target=Target("<=", 50, on="value"),
        ),
        Figure(
            SECTION,
            "delivered throughput",
            result["publisher_delivered_per_s"],
            "events/s",
            result["raw_delivered_per_s"],
            "raw produce of pre-encoded bytes",
            Target(">=", 0.5),
            note="acks=all, idempotent, flush included",
        ),
    ]
