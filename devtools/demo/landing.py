"""Whether what the demo sent has landed: new rows per sink table, and each sink group's
lag (its offsets in Postgres against its topic's end offsets).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from confluent_kafka import TopicPartition
from rich.progress import Progress

from consumers import SINKS, group_id_for
from producers.synthetic import Kind
from runtime import Settings
from runtime.clients import kafka_consumer, postgres_connect
from schemas.topics import topic_for

#: The tables each sink writes, and the event kind it lands.
SINK_TABLES: dict[str, tuple[str, Kind]] = {
    "audit": ("audit_events", "audit"),
    "analytics": ("analytics_events", "analytics"),
    "notifications": ("notifications", "notification"),
}


def _count(config: Settings, table: str) -> int:
    with postgres_connect(config) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _end_offsets(config: Settings, topic: str) -> dict[int, int]:
    consumer = kafka_consumer(config, f"demo-watermarks-{uuid.uuid4().hex[:6]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def _committed(config: Settings, group: str, topic: str) -> dict[int, int]:
    with postgres_connect(config) as conn:
        rows = conn.execute(
            "SELECT partition, coalesce(next_offset, 0) FROM consumer_offsets"
            " WHERE group_id = %s AND topic = %s",
            (group, topic),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


def _wait_for_landing(
    config: Settings,
    progress: Progress,
    timeout: float,
    *,
    before: dict[str, int],
    expected: dict[str, int],
    dead_letters: Callable[[], int],
    poison: int,
) -> bool:
    """Wait until every sink has written at least as many new rows as events went out,
    and the poison records reached the dead-letter topic."""
    task = progress.add_task("landing in Postgres", total=sum(expected.values()))
    deadline = time.monotonic() + timeout
    while True:
        new = {
            name: _count(config, table) - before[name]
            for name, (table, _kind) in SINK_TABLES.items()
        }
        progress.update(task, completed=sum(min(new[n], expected[n]) for n in expected))
        if all(new[n] >= expected[n] for n in expected) and dead_letters() >= poison:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def _lag(config: Settings) -> dict[str, int]:
    """Records between each sink group's Postgres offsets and its topic's end offsets."""
    lag = {}
    for name in SINK_TABLES:
        topic = topic_for(SINKS[name]().event_type)
        committed = _committed(config, group_id_for(name), topic)
        ends = _end_offsets(config, topic)
        # Some brokers (the local one) report end offsets short: clamp at zero.
        lag[name] = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
    return lag
