"""Micro-benchmark of the serde hot paths (not collected by pytest: no timing asserts).

Run: ``taskset -c 1 .venv/bin/python tests/schemas/bench_schema_serde.py`` (pinning to one core
steadies the numbers; ``--quick`` takes a tenth of the samples). Prints, per operation, the
median and p99 of batch means (2000 batches of 50 calls) and of single calls timed one by one
(100,000 calls; includes ~0.1 us of timer overhead): serializing an AuditEvent next to fastavro's
validate and schemaless_writer for the same record, then deserializing one event of each type
(and a v1 AnalyticsEvent, read through schema resolution), next to the careful fastavro path.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import fastavro
from fastavro.validation import validate as fastavro_validate

from schemas import (
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    EntityChanged,
    Event,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
    NotificationChannel,
    NotificationRequested,
)
from schemas._codec import strip_logical_types
from schemas.catalog import default_catalog

_SCALE = 10 if "--quick" in sys.argv else 1


def _measure(call: Callable[[], object], *, batches: int = 2000, batch: int = 50) -> str:
    batches //= _SCALE
    means = sorted(t / batch * 1e6 for t in timeit.repeat(call, number=batch, repeat=batches))
    singles = []
    clock = time.perf_counter_ns
    for _ in range(100_000 // _SCALE):
        start = clock()
        call()
        singles.append((clock() - start) / 1000)
    singles.sort()
    return (
        f"batched: median {statistics.median(means):6.2f} p99 {_p99(means):6.2f} us | "
        f"single calls: median {statistics.median(singles):6.2f} p99 {_p99(singles):6.2f} us"
    )


def _p99(samples: list[float]) -> float:
    return samples[int(len(samples) * 0.99)]


def _events() -> list[Event]:
    """One typical event of each type, optional fields set."""
    return [
        AuditEvent.new(
            tenant_id="tenant-42",
            producer="billing-api",
            actor_id="user-123",
            action="invoice.update",
            resource_type="invoice",
            resource_id="inv-9876",
            outcome=AuditOutcome.SUCCESS,
            ip="203.0.113.7",
            details={"field": "amount", "old": "10.00", "new": "12.50"},
        ),
        AnalyticsEvent.new(
            tenant_id="tenant-42",
            producer="web",
            name="checkout_completed",
            user_id="user-1",
            session_id="sess-1",
            properties={"plan": "pro", "path": "/checkout"},
            value=49.9,
            platform="ios",
        ),
        NotificationRequested.new(
            tenant_id="tenant-42",
            producer="billing-api",
            notification_id=str(uuid.uuid4()),
            channel=NotificationChannel.EMAIL,
            recipient="finance@example.com",
            template="invoice_paid",
            params={"invoice": "inv-9876", "amount": "12.50"},
            dedupe_key="inv-9876-paid",
        ),
        EntityChanged.new(
            tenant_id="tenant-42",
            producer="crm",
            entity_type="customer",
            entity_id="c-77",
            version=12,
            change_kind=ChangeKind.UPDATED,
        ),
    ]


def _analytics_v1(event: AnalyticsEvent) -> bytes:
    """`event` as a v1 producer (before `platform`) wrote it."""
    v1 = default_catalog().versions("analytics_event")[0]
    record: dict[str, Any] = {f["name"]: getattr(event, f["name"]) for f in v1.schema["fields"]}
    record["schema_version"] = 1
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(dict(v1.schema)), record)
    return b"\xc3\x01" + v1.fingerprint + buffer.getvalue()


def main() -> None:
    events = _events()
    event = events[0]
    serializer = EventSerializer()
    confluent = EventSerializer(schema_registry=InMemorySchemaRegistry())
    value = serializer.serialize(event, "audit")

    schema = fastavro.parse_schema(
        strip_logical_types(default_catalog().current("audit_event").schema)
    )
    record = {
        **{name: getattr(event, name) for name in AuditEvent.__dataclass_fields__},
        "occurred_at": 1_732_380_000_000_000,
        "outcome": "SUCCESS",
    }

    def fastavro_write() -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, record)
        return buffer.getvalue()

    print(f"AuditEvent, {len(value)} bytes encoded")
    print(f"serialize (single-object)     {_measure(lambda: serializer.serialize(event, 'a'))}")
    print(f"serialize (Confluent framing) {_measure(lambda: confluent.serialize(event, 'a'))}")
    print(f"fastavro validate             {_measure(lambda: fastavro_validate(record, schema))}")
    print(f"fastavro schemaless_writer    {_measure(fastavro_write)}")

    deserializer = EventDeserializer()
    registry = InMemorySchemaRegistry()
    confluent_serializer = EventSerializer(schema_registry=registry)
    confluent_deserializer = EventDeserializer(schema_registry=registry)
    assert isinstance(events[1], AnalyticsEvent)
    cases = [
        *((type(e).__name__, serializer.serialize(e, "t"), deserializer) for e in events),
        ("AnalyticsEvent v1", _analytics_v1(events[1]), deserializer),
        ("AuditEvent, Confluent framing", confluent_serializer.serialize(event, "t"), None),
    ]
    for name, data, reader in cases:
        reader = reader or confluent_deserializer
        print(f"\n{name}, {len(data)} bytes encoded")
        _measure_decoding(reader, data)


def _measure_decoding(deserializer: EventDeserializer, data: bytes) -> None:
    decoded = deserializer.deserialize(data, "t")
    careful = deserializer._deserialize_carefully
    assert careful(data, "t") == decoded
    print(f"deserialize                   {_measure(lambda: deserializer.deserialize(data, 't'))}")
    print(f"  careful path (fastavro)     {_measure(lambda: careful(data, 't'))}")


if __name__ == "__main__":
    main()
