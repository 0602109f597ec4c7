"""Micro-benchmark of the serde hot paths: the ``serde`` section of ``sidestream bench``.

``sidestream bench --section serde`` scores, per operation, the median single call (µs)
next to fastavro doing the same work: serializing an AuditEvent next to fastavro's
schemaless_writer for the same record, and deserializing one event of each type (and a v1
AnalyticsEvent, read through schema resolution) next to the careful fastavro path.

Standalone, with the full distribution (median and p99 of batch means and of single calls):
``taskset -c 1 .venv/bin/python -m devtools.bench.serde [--quick]`` (pinning to one core
steadies the numbers; ``--quick`` takes a tenth of the samples).
"""

from __future__ import annotations

import functools
import io
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.validation import validate as fastavro_validate

from devtools.bench.harness import BenchContext, Figure
from producers.synthetic import KINDS, SyntheticEvents
from schemas import (
    AnalyticsEvent,
    AuditEvent,
    Event,
    EventDeserializer,
    EventSerializer,
    InMemorySchemaRegistry,
)
from schemas._codec import strip_logical_types
from schemas.catalog import default_catalog

SECTION = "serde"

__all__ = ["run"]

_SCALE = 10 if "--quick" in sys.argv else 1


def _single_calls(call: Callable[[], object], n: int) -> list[float]:
    """``n`` calls timed one by one, in µs, sorted (includes ~0.1 µs of timer overhead)."""
    singles = []
    clock = time.perf_counter_ns
    for _ in range(n):
        start = clock()
        call()
        singles.append((clock() - start) / 1000)
    singles.sort()
    return singles


def _measure(call: Callable[[], object], *, batches: int = 2000, batch: int = 50) -> str:
    batches //= _SCALE
    means = sorted(t / batch * 1e6 for t in timeit.repeat(call, number=batch, repeat=batches))
    singles = _single_calls(call, 100_000 // _SCALE)
    return (
        f"batched: median {statistics.median(means):6.2f} p99 {_p99(means):6.2f} us | "
        f"single calls: median {statistics.median(singles):6.2f} p99 {_p99(singles):6.2f} us"
    )


def _p99(samples: list[float]) -> float:
    return samples[int(len(samples) * 0.99)]


def _events() -> list[Event]:
    """One typical event of each type (audit, analytics, notification, entity), optional
    fields set, from the load generator."""
    synthetic = SyntheticEvents(seed=7)
    return [synthetic.next(kind) for kind in KINDS]


def _analytics_v1(event: AnalyticsEvent) -> bytes:
    """`event` as a v1 producer (before `platform`) wrote it."""
    v1 = default_catalog().versions("analytics_event")[0]
    record: dict[str, Any] = {f["name"]: getattr(event, f["name"]) for f in v1.schema["fields"]}
    record["schema_version"] = 1
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(dict(v1.schema)), record)
    return b"\xc3\x01" + v1.fingerprint + buffer.getvalue()


@dataclass(frozen=True)
class _Workload:
    """What is measured: one AuditEvent encoded several ways, and one value per case to
    decode, with the deserializer that reads it."""

    encoded_size: int
    serialize: Callable[[], object]
    serialize_confluent: Callable[[], object]
    fastavro_validate: Callable[[], object]
    fastavro_write: Callable[[], object]
    decoding: list[tuple[str, bytes, EventDeserializer]]


def _workload() -> _Workload:
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

    deserializer = EventDeserializer()
    registry = InMemorySchemaRegistry()
    confluent_serializer = EventSerializer(schema_registry=registry)
    confluent_deserializer = EventDeserializer(schema_registry=registry)
    assert isinstance(events[1], AnalyticsEvent)
    return _Workload(
        encoded_size=len(value),
        serialize=lambda: serializer.serialize(event, "a"),
        serialize_confluent=lambda: confluent.serialize(event, "a"),
        fastavro_validate=lambda: fastavro_validate(record, schema),
        fastavro_write=fastavro_write,
        decoding=[
            *((type(e).__name__, serializer.serialize(e, "t"), deserializer) for e in events),
            ("AnalyticsEvent v1", _analytics_v1(events[1]), deserializer),
            (
                "AuditEvent, Confluent framing",
                confluent_serializer.serialize(event, "t"),
                confluent_deserializer,
            ),
        ],
    )


def run(ctx: BenchContext) -> list[Figure]:
    """The ``serde`` section: median single-call cost (µs) of our serde next to fastavro."""
    n = ctx.sizes.pick(quick=5_000, full=100_000)

    def median_us(call: Callable[[], object]) -> float:
        return statistics.median(_single_calls(call, n))

    work = _workload()
    figures = [
        Figure(
            SECTION,
            f"serialize AuditEvent ({work.encoded_size} B) median",
            median_us(work.serialize),
            "µs",
            baseline=median_us(work.fastavro_write),
            baseline_name="fastavro schemaless_writer, same record",
            note="validation and framing included; the baseline does neither",
        )
    ]
    for name, data, reader in work.decoding:
        assert reader._deserialize_carefully(data, "t") == reader.deserialize(data, "t")
        figures.append(
            Figure(
                SECTION,
                f"deserialize {name} median",
                median_us(functools.partial(reader.deserialize, data, "t")),
                "µs",
                baseline=median_us(functools.partial(reader._deserialize_carefully, data, "t")),
                baseline_name="careful path (fastavro)",
            )
        )
    return figures


def main() -> None:
    work = _workload()
    print(f"AuditEvent, {work.encoded_size} bytes encoded")
    print(f"serialize (single-object)     {_measure(work.serialize)}")
    print(f"serialize (Confluent framing) {_measure(work.serialize_confluent)}")
    print(f"fastavro validate             {_measure(work.fastavro_validate)}")
    print(f"fastavro schemaless_writer    {_measure(work.fastavro_write)}")
    for name, data, reader in work.decoding:
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
