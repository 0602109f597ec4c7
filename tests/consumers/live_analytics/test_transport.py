"""Exact end offsets for table recovery, against the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiokafka  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from consumers.live_analytics._transport import exact_end_offsets
from runtime import Settings
from runtime.clients import kafka_producer


def test_end_offsets_count_every_record_of_the_last_batch(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("live_ends", partitions=2)
    # Batches of many records (linger), as faust's producer writes changelogs under load;
    # partition 1 stays empty.
    producer = kafka_producer(stack_settings, **{"linger.ms": 50, "compression.type": "none"})
    for i in range(500):
        producer.produce(topic, value=b"x%d" % i, partition=0)
    assert producer.flush(30) == 0
    servers = stack_settings.kafka_bootstrap_servers

    async def measure() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int | None]]:
        partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=servers)
        await consumer.start()
        try:
            reported = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        exact = await exact_end_offsets(
            lambda: aiokafka.AIOKafkaConsumer(bootstrap_servers=servers), reported
        )
        return reported, exact

    reported, exact = asyncio.run(measure())
    assert exact[TopicPartition(topic, 0)] == 500
    assert exact[TopicPartition(topic, 1)] == 0
    # The local broker reports the start of the last batch (+1) instead: what this fixes.
    assert reported[TopicPartition(topic, 0)] <= 500, reported
