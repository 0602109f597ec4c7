"""Reading a topic by assignment: true end offsets, single messages, ranges."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from confluent_kafka import TopicPartition

from consumers.ops import TopicReader
from runtime import Settings
from runtime.clients import kafka_consumer
from tests.consumers.ops.support import produce_stamped


def test_end_offsets_are_confirmed_by_reading_to_the_end(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("ends", partitions=2)
    base = int(time.time() * 1000)
    sizes = [10, 1, 25, 7]  # four batches in partition 0; partition 1 stays empty
    offset = 0
    for size in sizes:
        produce_stamped(
            stack_settings,
            topic,
            [b"x"] * size,
            stamps_ms=[base + offset + i for i in range(size)],
            partition=0,
        )
        offset += size
    probe = kafka_consumer(stack_settings, "watermark-probe")
    try:
        broker_high = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    finally:
        probe.close()

    with TopicReader.from_settings(stack_settings) as reader:
        ends = reader.ends([(topic, 0), (topic, 1)])
    full, empty = ends[(topic, 0)], ends[(topic, 1)]
    assert (full.low, full.end, full.verified) == (0, 43, True)
    # The reported end is the broker's own answer; it may read short, never long.
    assert full.reported == broker_high
    assert full.reported <= full.end
    assert full.short == (broker_high < 43)
    assert (empty.low, empty.reported, empty.end, empty.short) == (0, 0, 0, False)


def test_peek_finds_the_message_at_each_offset_and_nothing_at_the_end(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("peek", partitions=3)
    base = 1_700_000_000_000
    counts = {0: 140, 1: 75, 2: 0}
    for partition, count in counts.items():
        if count:
            produce_stamped(
                stack_settings,
                topic,
                [b"x"] * count,
                stamps_ms=[base + partition * 1_000_000 + i for i in range(count)],
                partition=partition,
                flush_every=30,
            )
    rng = random.Random(7)
    with TopicReader.from_settings(stack_settings) as reader:
        # Many assignments one after another: no answer may leak from an earlier one.
        for _ in range(40):
            wanted = {(topic, p): rng.randrange(counts[p] + 1) for p in counts}
            found = reader.peek(wanted)
            for (_, partition), offset in wanted.items():
                peek = found[(topic, partition)]
                if offset == counts[partition]:
                    assert peek is None
                else:
                    assert peek is not None
                    assert peek.offset == offset
                    assert peek.timestamp_ms == base + partition * 1_000_000 + offset
        # Past the end there is nothing, whatever the broker does there (tansu: silence).
        assert reader.peek({(topic, 2): 5, (topic, 1): 75 + 9}) == {
            (topic, 2): None,
            (topic, 1): None,
        }
        scanned = list(
            reader.scan({(topic, 0): (30, 45), (topic, 1): (70, 75), (topic, 2): (0, 0)})
        )
    assert sorted((m.partition(), m.offset()) for m in scanned) == [
        *((0, o) for o in range(30, 45)),
        *((1, o) for o in range(70, 75)),
    ]
