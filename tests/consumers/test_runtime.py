"""Smart batching: a batch closes when the consumer has nothing more at hand, and a
backlog still fills whole batches. Fencing, with and without the writer thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from runtime import Settings
from runtime.clients import kafka_producer
from schemas import EventSerializer
from tests.consumers.support import count_rows, produce
from tests.support.events import audit_event
from tests.support.waiting import wait_for

StartWorker = Callable[[Settings, WorkerOptions], EmbeddedWorker]


def test_a_batch_closes_once_nothing_more_is_at_hand(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    # A batch may wait two minutes for more records; low load must not make it wait.
    settings = stack_settings.with_overrides(
        consumer_batch_max_wait_ms=120_000, consumer_batch_linger_ms=5
    )
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    for round_ in range(3):
        produce(stack_settings, topic, (audit_event(round_ * 10 + i) for i in range(10)))
        assert wait_for(
            lambda goal=(round_ + 1) * 10: (
                count_rows(pg_conn, sink_schema, "audit_events")  # type: ignore[misc]
                == goal
            ),
            timeout=60,
        )
    assert worker.shutdown() == 0


def test_a_backlog_still_fills_whole_batches(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    produce(stack_settings, topic, (audit_event(i) for i in range(20_000)))
    settings = stack_settings.with_overrides(consumer_batch_max_records=5000)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 20_000, timeout=90)
    batches = worker.metric("sidestream_batch_size_count", sink="audit")
    small = worker.metric("sidestream_batch_size_bucket", sink="audit", le="1000.0")
    full = batches - worker.metric("sidestream_batch_size_bucket", sink="audit", le="2000.0")
    assert full >= 2, (batches, small)  # most of the backlog went in batches of 2,000+
    assert worker.shutdown() == 0


def _produce_to(settings: Settings, topic: str, per_partition: dict[int, range]) -> None:
    """Audit events ``i`` for each ``i`` of ``per_partition[p]``, into partition ``p``,
    interleaved so that one batch holds records of every partition."""
    serializer = EventSerializer()
    producer = kafka_producer(settings)
    columns = [[(partition, i) for i in numbers] for partition, numbers in per_partition.items()]
    for row in zip(*columns, strict=True):
        for partition, i in row:
            event = audit_event(i)
            value = serializer.serialize(event, topic)
            producer.produce(topic, value=value, key=event.key, partition=partition)
        producer.poll(0)
    assert producer.flush(30) == 0


def _offset_rows(conn: psycopg.Connection[Any], schema: str, partition: int) -> list[int]:
    query = sql.SQL(
        "SELECT kafka_offset FROM {} WHERE kafka_partition = %s ORDER BY kafka_offset"
    ).format(sql.Identifier(schema, "audit_events"))
    return [row[0] for row in conn.execute(query, (partition,)).fetchall()]


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipelined", "one-thread"])
def test_a_fenced_partition_stops_and_the_rest_of_its_batch_is_read_again(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    pipeline: bool,
) -> None:
    """Another worker claims partition 0 behind this one's back (as ``replay --force``
    does): the batch that holds it is fenced and rolled back, partition 0 is no longer
    written by this worker, and partition 1's records of that batch (and of the batches
    read after it) are read again — every one lands once, with no gap."""
    topic = make_topic("audit", partitions=2)
    group = unique("g")
    settings = stack_settings.with_overrides(
        consumer_pipeline=pipeline, consumer_batch_max_records=2000
    )
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    _produce_to(stack_settings, topic, {0: range(0, 500), 1: range(10_000, 10_500)})
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 1000, timeout=60)
    assert any(t.name == "audit-writer" for t in threading.enumerate()) is pipeline

    pg_conn.execute(
        sql.SQL(
            "UPDATE {} SET generation = generation + 1 WHERE group_id = %s AND partition = 0"
        ).format(sql.Identifier(sink_schema, "consumer_offsets")),
        (group,),
    )
    _produce_to(stack_settings, topic, {0: range(500, 3000), 1: range(10_500, 13_000)})
    assert wait_for(lambda: len(_offset_rows(pg_conn, sink_schema, 1)) == 3000, timeout=60)
    assert worker.metric("sidestream_batch_fenced_total", sink="audit") >= 1
    assert _offset_rows(pg_conn, sink_schema, 1) == list(range(3000))
    assert _offset_rows(pg_conn, sink_schema, 0) == list(range(500))
    assert worker.shutdown() == 0


@pytest.mark.parametrize("interval_s", [1.0, 0.0], ids=["released", "never"])
def test_free_memory_is_released_after_batches_unless_switched_off(
    stack_settings: Settings,
    topic: str,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    interval_s: float,
) -> None:
    settings = stack_settings.with_overrides(consumer_memory_release_interval_s=interval_s)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    produce(stack_settings, topic, (audit_event(i) for i in range(10)))
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 10, timeout=60)
    assert worker.shutdown() == 0  # every batch acknowledged
    assert worker.runtime is not None
    assert (worker.runtime.memory_releases > 0) is (interval_s > 0)
