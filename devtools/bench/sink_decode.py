"""µs per record of the audit sink's decoding, on one thread, without servers.

``python -m devtools.bench.sink_decode [records-per-batch] [rounds]`` decodes batches of
in-memory Kafka messages the way the batch runtime's loop does (the sink's row decoder,
`consumers.rows`; the careful path for comparison) and prints thread CPU time per record:
less sensitive to a shared machine than wall-clock rates, so a change to the decoding can
be compared before and after. GC tuned as in a worker process
(`runtime.lifecycle.freeze_startup_objects`); up to three batches stay alive, as in a
pipelined worker.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from consumers import RawRecord, Record
from consumers.rows import binary_rows
from consumers.sinks.audit import AUDIT_ROWS, AuditSink
from producers.synthetic import SyntheticEvents
from runtime.lifecycle import freeze_startup_objects
from schemas import EventDeserializer, EventSerializer

_TOPIC = "bench-decode"


@dataclass(frozen=True, slots=True)
class DecodeCost:
    """Thread CPU µs per record over the rounds: the least and the median."""

    least_us: float
    median_us: float

    def __str__(self) -> str:
        return f"{self.least_us:.2f} µs/record (median {self.median_us:.2f})"


def audit_messages(count: int, seed: int = 7) -> list[Message]:
    """``count`` audit events as the messages a consumer hands over (6 partitions)."""
    serializer = EventSerializer()
    events = SyntheticEvents(seed=seed).take(count, "audit")
    return [
        Message(
            topic=_TOPIC,
            partition=i % 6,
            offset=i,
            key=event.key,
            value=serializer.serialize(event, _TOPIC),
        )
        for i, event in enumerate(events)
    ]


def _cost(decode: Callable[[], object], count: int, rounds: int) -> DecodeCost:
    alive: list[object] = []
    per_record: list[float] = []
    for _ in range(rounds):
        started = time.thread_time()
        alive.append(decode())
        per_record.append((time.thread_time() - started) / count * 1e6)
        del alive[:-3]  # a pipelined worker holds up to three batches
    return DecodeCost(min(per_record), statistics.median(per_record))


def measure(count: int = 5000, rounds: int = 40) -> dict[str, DecodeCost]:
    """Cost per record of the loop's decoding — the fast path (message → binary COPY
    row) and the careful path (message → event) — and of the writer's COPY rows of each
    (the careful path's are built there, on the worker's bottleneck)."""
    messages = audit_messages(count)
    deserializer = EventDeserializer()
    rows = AuditSink().row_decoder(deserializer)
    for message in messages[:1]:
        rows(message)  # the first record of a schema compiles its decoder

    def fast() -> list[Any]:
        decoded = [rows(message) for message in messages]
        if any(record is None for record in decoded):
            raise RuntimeError("a record left the fast path: the bench measures the wrong thing")
        return decoded

    def careful() -> list[Record[Any]]:
        return [
            Record(
                RawRecord(_TOPIC, m.partition() or 0, m.offset() or 0, None, None, [], 0),
                deserializer.deserialize(m.value() or b"", _TOPIC),
            )
            for m in messages
        ]

    threshold = gc.get_threshold()
    freeze_startup_objects()
    try:
        rowed, evented = fast(), careful()
        return {
            "loop: fast path (row decoder)": _cost(fast, count, rounds),
            "loop: careful path (event)": _cost(careful, count, rounds),
            "writer: fast path's COPY rows": _cost(
                lambda: binary_rows(AUDIT_ROWS, rowed, AuditSink.row), count, rounds
            ),
            "writer: careful path's COPY rows": _cost(
                lambda: binary_rows(AUDIT_ROWS, evented, AuditSink.row), count, rounds
            ),
        }
    finally:  # the calling process (a test run) keeps its own GC settings
        gc.unfreeze()
        gc.set_threshold(*threshold)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    print(f"audit sink decoding, {rounds} batches of {count} records, thread CPU time:")
    for name, cost in measure(count, rounds).items():
        print(f"  {name:34} {cost}")


if __name__ == "__main__":
    main()
