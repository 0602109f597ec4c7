"""EventPublisher and AsyncEventPublisher against the real broker."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from producers import (
    AsyncEventPublisher,
    Backpressure,
    DeliveryError,
    DeliveryReport,
    EventPublisher,
    PublisherClosedError,
)
from producers.delivery import event_id_of
from producers.metrics import PublisherMetrics
from producers.publisher import _LatencyBatch
from runtime import Settings
from runtime.clients import producer_config
from schemas import (
    AnalyticsEvent,
    AuditEvent,
    EntityChanged,
    EventDeserializer,
    EventSerializer,
    ValidationError,
    default_catalog,
    traceparent_from_headers,
)
from schemas.topics import topic_for
from schemas.wire import confluent_header, single_object_header
from tests.support.events import every_event_type, sample_entity

ReadAll = Callable[..., list[Any]]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _serde(
    wire_format: str, unique: Callable[[str], str]
) -> tuple[EventSerializer, EventDeserializer]:
    if wire_format == "single-object":
        return EventSerializer(), EventDeserializer()
    serializer = EventSerializer(schema_registry_url=f"mock://{unique('registry')}")
    # confluent-kafka's mock registry lives in its client: the reader shares that client.
    return serializer, EventDeserializer(schema_registry=serializer.schema_registry)


@pytest.mark.parametrize("wire_format", ["single-object", "confluent"])
def test_every_event_type_round_trips_through_kafka(
    stack_settings: Settings,
    topic: str,
    registry: CollectorRegistry,
    read_topic: ReadAll,
    unique: Callable[[str], str],
    wire_format: str,
) -> None:
    serializer, deserializer = _serde(wire_format, unique)
    events = every_event_type()
    with EventPublisher(
        settings=stack_settings, serializer=serializer, registry=registry, producer="test"
    ) as publisher:
        for event in events:
            publisher.publish(
                event, topic=topic, traceparent=TRACEPARENT, headers={"origin": b"test"}
            )
        assert publisher.flush(15) == 0

    messages = read_topic(stack_settings, topic)
    assert len(messages) == len(events)
    by_id = {event.event_id: event for event in events}
    for message in messages:
        decoded = deserializer.deserialize(message.value(), topic)
        original = by_id.pop(decoded.event_id)
        assert decoded == original
        assert message.key() == original.key
        headers = message.headers()
        assert traceparent_from_headers(headers) == TRACEPARENT
        assert ("origin", b"test") in headers
    assert by_id == {}
    delivered = registry.get_sample_value(
        "sidestream_events_delivered_total", {"producer": "test", "topic": topic}
    )
    assert delivered == len(events)


def _analytics_v1(topic: str, serializer: EventSerializer) -> tuple[str, bytes]:
    """An analytics event as a v1 writer (before `platform`) encodes it, in the
    serializer's wire format."""
    v1 = default_catalog().versions("analytics_event")[0]
    assert v1.version == 1
    event_id = str(uuid.uuid4())
    record = {
        "event_id": event_id,
        "event_type": "analytics_event",
        "tenant_id": "tenant-1",
        "occurred_at": datetime(2024, 3, 1, 8, 30, 15, 123456, tzinfo=UTC),
        "producer": "legacy-web",
        "schema_version": 1,
        "name": "page_view",
        "user_id": None,
        "session_id": "s-9",
        "properties": {"path": "/pricing"},
        "value": None,
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(dict(v1.schema)), record)
    registry = serializer.schema_registry
    if registry is None:
        header = single_object_header(v1.fingerprint)
    else:
        header = confluent_header(registry.register(f"{topic}-value", v1.schema_str))
    return event_id, header + body.getvalue()


@pytest.mark.parametrize("wire_format", ["single-object", "confluent"])
def test_an_old_writer_is_read_by_the_new_reader_through_kafka(
    stack_settings: Settings,
    topic: str,
    registry: CollectorRegistry,
    read_topic: ReadAll,
    unique: Callable[[str], str],
    wire_format: str,
) -> None:
    serializer, deserializer = _serde(wire_format, unique)
    old_id, old_value = _analytics_v1(topic, serializer)
    old_writer = Producer(producer_config(stack_settings))
    old_writer.produce(topic, old_value, b"tenant-1")
    assert old_writer.flush(15) == 0
    new_event = AnalyticsEvent.new(tenant_id="tenant-1", producer="web", name="x", platform="web")
    with EventPublisher(settings=stack_settings, serializer=serializer, registry=registry) as pub:
        pub.publish(new_event, topic=topic)
        assert pub.flush(15) == 0

    decoded = {
        event.event_id: event
        for event in (
            deserializer.deserialize(m.value(), topic) for m in read_topic(stack_settings, topic)
        )
    }
    old = decoded[old_id]
    assert isinstance(old, AnalyticsEvent)
    assert old.schema_version == 1
    assert old.platform == "unknown"  # the v2 default for a field v1 did not have
    assert old.properties == {"path": "/pricing"}
    assert decoded[new_event.event_id] == new_event


def _valid_audit() -> AuditEvent:
    return every_event_type()[0]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outcome": "SUCCESS"}, "outcome"),  # a str, not the enum
        ({"tenant_id": None}, "tenant_id"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"details": {"n": 1}}, "details"),
        ({"occurred_at": datetime(2024, 1, 1)}, "occurred_at"),  # naive
    ],
)
def test_an_invalid_event_names_the_field_and_nothing_reaches_kafka(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    registry: CollectorRegistry,
    read_topic: ReadAll,
    changes: dict[str, Any],
    field: str,
) -> None:
    topic = make_topic(partitions=1)
    invalid = dataclasses.replace(_valid_audit(), **changes)
    with EventPublisher(settings=stack_settings, registry=registry, producer="test") as publisher:
        with pytest.raises(ValidationError) as raised:
            publisher.publish(invalid, topic=topic)
        assert raised.value.field == field
        assert field in str(raised.value)
        # A valid event after it, with the same key (same partition): it must be alone.
        sentinel = _valid_audit()
        publisher.publish(sentinel, topic=topic)
        assert publisher.flush(15) == 0

    messages = read_topic(stack_settings, topic)
    assert [EventDeserializer().deserialize(m.value()).event_id for m in messages] == [
        sentinel.event_id
    ]
    published = registry.get_sample_value(
        "sidestream_events_published_total", {"producer": "test", "topic": topic}
    )
    assert published == 1


def test_something_that_is_not_an_event_is_refused(
    stack_settings: Settings, registry: CollectorRegistry
) -> None:
    with EventPublisher(settings=stack_settings, registry=registry) as publisher:
        with pytest.raises(ValidationError) as raised:
            publisher.publish({"event_id": "x"})  # type: ignore[arg-type]
        assert raised.value.field is None


def test_the_topic_and_key_default_from_the_event(
    private_broker: Any, registry: CollectorRegistry, read_topic: ReadAll
) -> None:
    # On a broker of the test's own: the default topic is a shared name.
    topic = private_broker.create_topic(topic_for(EntityChanged))
    event = sample_entity()
    with EventPublisher(settings=private_broker.settings, registry=registry) as publisher:
        publisher.publish(event)
        assert publisher.flush(15) == 0
    [message] = read_topic(private_broker.settings, topic)
    assert message.key() == b"tenant-42:customer:c-77" == event.key
    assert EventDeserializer().deserialize(message.value()) == event


def test_delivery_reports_reach_the_callback_with_the_event_id(
    stack_settings: Settings, topic: str, registry: CollectorRegistry
) -> None:
    reports: list[DeliveryReport] = []
    lock = threading.Lock()

    def on_delivery(report: DeliveryReport) -> None:
        with lock:
            reports.append(report)

    events = every_event_type()
    with EventPublisher(
        settings=stack_settings, registry=registry, producer="cb", on_delivery=on_delivery
    ) as publisher:
        for event in events:
            publisher.publish(event, topic=topic)
        assert publisher.flush(15) == 0
        # Reports are served by the publisher's thread or by flush(): all in, none twice.
        with lock:
            assert sorted(r.event_id or "" for r in reports) == sorted(e.event_id for e in events)
            assert all(r.delivered and r.offset is not None and r.topic == topic for r in reports)
    latency_count = registry.get_sample_value(
        "sidestream_delivery_latency_seconds_count", {"producer": "cb"}
    )
    assert latency_count == len(events)
    assert registry.get_sample_value("sidestream_producer_queue_depth", {"producer": "cb"}) == 0


def test_every_report_is_booked_when_flush_returns(
    stack_settings: Settings, make_topic: Callable[..., str], registry: CollectorRegistry
) -> None:
    # Reports (and published topics) are queued and booked in batches: flush() books what
    # it served, and the callback runs after its report is counted.
    topics = [make_topic(), make_topic()]
    counts = {topics[0]: 30, topics[1]: 12}
    seen: list[tuple[str, float]] = []

    def delivered(topic: str, series: str = "delivered") -> float:
        value = registry.get_sample_value(
            f"sidestream_events_{series}_total", {"producer": "booked", "topic": topic}
        )
        return value or 0.0

    def on_delivery(report: DeliveryReport) -> None:
        seen.append((report.topic, delivered(report.topic)))

    with EventPublisher(
        settings=stack_settings, registry=registry, producer="booked", on_delivery=on_delivery
    ) as publisher:
        for topic, count in counts.items():
            for _ in range(count):
                publisher.publish(_valid_audit(), topic=topic)
        assert publisher.flush(15) == 0
        assert {topic: delivered(topic) for topic in topics} == counts
        assert {topic: delivered(topic, "published") for topic in topics} == counts
        latency_count = registry.get_sample_value(
            "sidestream_delivery_latency_seconds_count", {"producer": "booked"}
        )
        assert latency_count == sum(counts.values())
        assert len(seen) == sum(counts.values())
        assert all(count >= 1 for _, count in seen)


def test_latencies_booked_in_bulk_match_observe_one_by_one() -> None:
    # Bucket bounds exactly (le is inclusive), between them, zero, and past the last bound.
    latencies = [0.0, 0.001, 0.0011, 0.0025, 0.004, 0.005, 0.2, 1.0, 29.9, 30.0, 31.0, 400.0]
    one_by_one, in_bulk = CollectorRegistry(), CollectorRegistry()
    child = PublisherMetrics.for_registry(one_by_one).delivery_latency.labels("p")
    for latency in latencies:
        child.observe(latency)
    batch = _LatencyBatch(PublisherMetrics.for_registry(in_bulk).delivery_latency.labels("p"))
    for latency in latencies[:5]:
        batch.add(latency)
    batch.flush()
    batch.flush()  # nothing new: adds nothing
    for latency in latencies[5:]:
        batch.add(latency)
    batch.flush()

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (sample.name, sample.labels.get("le", "")): sample.value
            for family in registry.collect()
            if family.name == "sidestream_delivery_latency_seconds"
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    assert samples(in_bulk) == samples(one_by_one)
    assert samples(in_bulk)[("sidestream_delivery_latency_seconds_count", "")] == len(latencies)


def test_the_event_id_is_read_from_either_framing() -> None:
    # Every version of every schema starts with event_id: the envelope.
    catalog = default_catalog()
    for subject in catalog.subjects:
        for version in catalog.versions(subject):
            assert version.schema["fields"][0]["name"] == "event_id", version.path
    confluent = EventSerializer(schema_registry_url="mock://event-id")
    for event in every_event_type():
        assert event_id_of(EventSerializer().serialize(event, "t")) == event.event_id
        assert event_id_of(confluent.serialize(event, "t")) == event.event_id
    assert event_id_of(b"garbage") is None
    assert event_id_of(b"") is None


def test_publish_after_close_is_refused(
    stack_settings: Settings, registry: CollectorRegistry
) -> None:
    publisher = EventPublisher(settings=stack_settings, registry=registry)
    assert publisher.close(5) == 0
    with pytest.raises(PublisherClosedError):
        publisher.publish(_valid_audit(), topic="never")
    assert publisher.close(5) == 0  # twice is harmless


def test_contradictory_or_reserved_config_is_rejected(stack_settings: Settings) -> None:
    with pytest.raises(ValueError, match="contradictory queue bounds"):
        EventPublisher(
            settings=stack_settings,
            config={"queue.buffering.max.messages": 10},
            max_queue=20,
            registry=CollectorRegistry(),
        )
    with pytest.raises(ValueError, match="on_delivery"):
        EventPublisher(
            settings=stack_settings, config={"on_delivery": print}, registry=CollectorRegistry()
        )
    with pytest.raises(ValueError, match="settings"):
        EventPublisher(registry=CollectorRegistry())


# --- asyncio -------------------------------------------------------------------------------


def test_the_async_publisher_confirms_deliveries(
    stack_settings: Settings, topic: str, registry: CollectorRegistry, read_topic: ReadAll
) -> None:
    events = every_event_type()

    async def main() -> list[DeliveryReport]:
        async with AsyncEventPublisher(
            EventPublisher(settings=stack_settings, registry=registry)
        ) as publisher:
            await publisher.publish(events[0], topic=topic)
            confirmed = await asyncio.gather(
                *(publisher.publish_confirmed(e, topic=topic, timeout=15) for e in events[1:])
            )
            assert await publisher.flush(15) == 0
            return list(confirmed)

    reports = asyncio.run(main())
    assert [r.event_id for r in reports] == [e.event_id for e in events[1:]]
    assert all(r.delivered and r.offset is not None for r in reports)
    assert len(read_topic(stack_settings, topic)) == len(events)


# --- a broker that stops answering -----------------------------------------------------------


def test_publish_raises_backpressure_instead_of_hanging_when_the_broker_is_frozen(
    private_broker: Any, registry: CollectorRegistry, read_topic: ReadAll
) -> None:
    topic = private_broker.create_topic()
    settings = private_broker.settings
    publisher = EventPublisher(
        settings=settings,
        registry=registry,
        producer="frozen",
        max_queue=50,
        config={"message.timeout.ms": 2000, "request.timeout.ms": 1000},
    )

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"producer": "frozen", "topic": topic})

    try:
        publisher.publish(_valid_audit(), topic=topic)
        assert publisher.flush(10) == 0
        with private_broker.frozen():
            accepted, slowest, raised = 0, 0.0, None
            for _ in range(10_000):  # bounded: the queue holds 50
                started = time.perf_counter()
                try:
                    publisher.publish(_valid_audit(), topic=topic)
                except Backpressure as exc:
                    raised = exc
                    break
                finally:
                    slowest = max(slowest, time.perf_counter() - started)
                accepted += 1
            assert raised is not None, f"{accepted} events accepted with max_queue=50"
            assert 0.05 <= raised.retry_after <= 5.0
            assert raised.queue_depth >= 50
            assert raised.topic == topic
            # A publish that waited for queue space would wait for the 2 s message
            # timeout; 1.5 s leaves room for a busy machine's scheduling stalls.
            assert slowest < 1.5, f"a publish() took {slowest:.3f}s"
            assert accepted <= 50
            assert sample("sidestream_publish_backpressure_total") == 1
            # Still frozen: the queued events time out, are reported failed, free the queue.
            deadline = time.monotonic() + 15
            while publisher.queue_depth() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert publisher.queue_depth() == 0
            assert sample("sidestream_events_delivery_failed_total") == accepted

        # Thawed: the publisher delivers again (replacing its producer if Kafka fenced it).
        after = _valid_audit()
        deadline = time.monotonic() + 30
        delivered = False
        while not delivered and time.monotonic() < deadline:
            try:
                publisher.publish(after, topic=topic)
            except Backpressure as exc:
                time.sleep(exc.retry_after)
                continue
            publisher.flush(10)
            ids = {event_id_of(m.value()) for m in read_topic(settings, topic)}
            delivered = after.event_id in ids
        assert delivered, "nothing was delivered within 30s of the thaw"
    finally:
        publisher.close(5)


def test_publish_confirmed_raises_when_kafka_never_acknowledges(
    private_broker: Any, registry: CollectorRegistry
) -> None:
    topic = private_broker.create_topic()
    failures: list[DeliveryReport] = []
    publisher = EventPublisher(
        settings=private_broker.settings,
        registry=registry,
        producer="lost",
        on_delivery=lambda report: failures.append(report) if report.error else None,
        config={"message.timeout.ms": 1500, "request.timeout.ms": 1000},
    )
    event = _valid_audit()

    async def main() -> None:
        async with AsyncEventPublisher(publisher) as front:
            with private_broker.frozen(), pytest.raises(DeliveryError) as raised:
                await front.publish_confirmed(event, topic=topic, timeout=15)
            assert raised.value.event_id == event.event_id
            assert raised.value.topic == topic

    asyncio.run(main())
    assert [r.event_id for r in failures] == [event.event_id]
    failed = registry.get_sample_value(
        "sidestream_events_delivery_failed_total", {"producer": "lost", "topic": topic}
    )
    assert failed == 1
