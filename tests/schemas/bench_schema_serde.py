"""Micro-benchmark of the serializer's hot path (not collected by pytest: no timing asserts).

Run: ``taskset -c 1 .venv/bin/python tests/schemas/bench_schema_serde.py`` (pinning to one core
steadies the numbers). Prints, per operation, the median and p99 of batch means (2000 batches of
50 calls) and of single calls timed one by one (100,000 calls; includes ~0.1 us of timer
overhead), next to fastavro's validate and schemaless_writer for the same record.
"""

from __future__ import annotations

import io
import statistics
import time
import timeit
from collections.abc import Callable

import fastavro
from fastavro.validation import validate as fastavro_validate

from schemas import (
    AuditEvent,
    AuditOutcome,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
)
from schemas._codec import strip_logical_types
from schemas.catalog import default_catalog


def _measure(call: Callable[[], object], *, batches: int = 2000, batch: int = 50) -> str:
    means = sorted(t / batch * 1e6 for t in timeit.repeat(call, number=batch, repeat=batches))
    singles = []
    clock = time.perf_counter_ns
    for _ in range(100_000):
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


def main() -> None:
    event = AuditEvent.new(
        tenant_id="tenant-42",
        producer="billing-api",
        actor_id="user-123",
        action="invoice.update",
        resource_type="invoice",
        resource_id="inv-9876",
        outcome=AuditOutcome.SUCCESS,
        ip="203.0.113.7",
        details={"field": "amount", "old": "10.00", "new": "12.50"},
    )
    serializer = EventSerializer()
    confluent = EventSerializer(schema_registry=InMemorySchemaRegistry())
    deserializer = EventDeserializer()
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
    print(f"deserialize                   {_measure(lambda: deserializer.deserialize(value))}")
    print(f"fastavro validate             {_measure(lambda: fastavro_validate(record, schema))}")
    print(f"fastavro schemaless_writer    {_measure(fastavro_write)}")


if __name__ == "__main__":
    main()
