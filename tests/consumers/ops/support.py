"""Helpers for the operator tools' tests: stamped events and positions on the broker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaError, Message
from psycopg import sql

from consumers.ops import GroupInspector, TopicReader
from runtime import Settings
from runtime.clients import kafka_producer
from schemas import Event, EventSerializer


@dataclass(frozen=True, slots=True)
class Produced:
    """Where one produced record landed."""

    partition: int
    offset: int
    timestamp_ms: int
    event: Event | None


def produce_stamped(
    settings: Settings,
    topic: str,
    events: Sequence[Event | bytes],
    *,
    stamps_ms: Sequence[int],
    headers: list[tuple[str, bytes]] | None = None,
    partition: int | None = None,
    flush_every: int = 0,
) -> list[Produced]:
    """Produce ``events`` with explicit record timestamps; returns where each landed.

    ``flush_every`` > 0 flushes after that many records, so the partition holds several
    batches (the local broker reports its high watermark at the last batch's start).
    """
    serializer = EventSerializer()
    producer = kafka_producer(settings)
    landed: list[Produced | None] = [None] * len(events)
    errors: list[KafkaError] = []

    def recorder(index: int, event: Event | None) -> Any:
        def on_delivery(err: KafkaError | None, message: Message) -> None:
            if err is not None:
                errors.append(err)
                return
            landed[index] = Produced(
                message.partition() or 0, message.offset() or 0, stamps_ms[index], event
            )

        return on_delivery

    for index, (item, stamp) in enumerate(zip(events, stamps_ms, strict=True)):
        options: dict[str, Any] = {"timestamp": stamp, "headers": headers or []}
        if partition is not None:
            options["partition"] = partition
        if isinstance(item, bytes):
            producer.produce(
                topic, value=item, key=b"raw", on_delivery=recorder(index, None), **options
            )
        else:
            producer.produce(
                topic,
                value=serializer.serialize(item, topic),
                key=item.key,
                on_delivery=recorder(index, item),
                **options,
            )
        if flush_every and (index + 1) % flush_every == 0:
            assert producer.flush(30) == 0
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert all(item is not None for item in landed)
    return [item for item in landed if item is not None]


def per_partition(landed: Sequence[Produced]) -> Counter[int]:
    return Counter(item.partition for item in landed)


@contextmanager
def ops_clients(settings: Settings) -> Iterator[tuple[TopicReader, GroupInspector]]:
    reader = TopicReader.from_settings(settings)
    try:
        yield reader, GroupInspector.from_settings(settings)
    finally:
        reader.close()


def offsets_rows(conn: psycopg.Connection[Any], schema: str, group: str) -> list[tuple[Any, ...]]:
    """Every column of the group's consumer_offsets rows, for before/after comparisons."""
    return conn.execute(
        sql.SQL(
            "SELECT topic, partition, next_offset, generation, owner, updated_at"
            " FROM {} WHERE group_id = %s ORDER BY 1, 2"
        ).format(sql.Identifier(schema, "consumer_offsets")),
        (group,),
    ).fetchall()


def topic_size(reader: TopicReader, topic: str) -> int:
    """Records in ``topic`` (all partitions), counted to the true end."""
    keys = [(topic, p) for p in reader.partitions(topic)]
    return sum(e.end - e.low for e in reader.ends(keys).values())


def read_topic(reader: TopicReader, topic: str) -> list[Message]:
    """Every record of ``topic``, read by assignment (no group join to wait for)."""
    keys = [(topic, p) for p in reader.partitions(topic)]
    ends = reader.ends(keys)
    return list(reader.scan({key: (e.low, e.end) for key, e in ends.items()}))
