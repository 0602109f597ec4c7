"""Smart batching: a batch closes when the consumer has nothing more at hand, and a
backlog still fills whole batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from runtime import Settings
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
