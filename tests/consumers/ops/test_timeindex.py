"""Time → offset: the broker's answer is checked, and bisected when it is wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from consumers.ops import offsets_for_time, parse_time
from consumers.ops.timeindex import epoch_ms
from runtime import Settings
from tests.consumers.ops.support import ops_clients, produce_stamped

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("90s", NOW - timedelta(seconds=90)),
        ("7d", NOW - timedelta(days=7)),
        ("1w 2d", NOW - timedelta(days=9)),
        ("2025-05-31T08:00:00Z", datetime(2025, 5, 31, 8, tzinfo=UTC)),
        ("2025-05-31T10:00:00+02:00", datetime(2025, 5, 31, 8, tzinfo=UTC)),
        ("2025-05-31 08:00", datetime(2025, 5, 31, 8, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_parse_time_reads_relative_and_iso_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "h2", "2025-13-01"])
def test_parse_time_rejects_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="relative time"):
        parse_time(text, now=NOW)


def test_epoch_ms_rounds_up_so_a_stamp_at_the_instant_counts() -> None:
    assert epoch_ms(datetime.fromtimestamp(1_700_000_050.5, UTC)) == 1_700_000_050_500
    assert (
        epoch_ms(datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC))
        == epoch_ms(datetime(2025, 1, 1, tzinfo=UTC)) + 1
    )


def test_time_lookup_agrees_with_a_full_scan(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("times", partitions=3)
    base = int(time.time() * 1000) - 3_600_000
    # Partition 0: 120 records a second apart, partition 1: 45 records three seconds
    # apart starting later, partition 2: empty. Several batches each.
    stamps = {
        0: [base + i * 1000 for i in range(120)],
        1: [base + 20_000 + i * 3000 for i in range(45)],
    }
    for partition, partition_stamps in stamps.items():
        produce_stamped(
            stack_settings,
            topic,
            [b"x"] * len(partition_stamps),
            stamps_ms=partition_stamps,
            partition=partition,
            flush_every=17,
        )
    keys = [(topic, 0), (topic, 1), (topic, 2)]
    targets = [
        base - 5000,  # before everything
        base,  # exactly the first record
        base + 50_500,  # between two records
        base + 80_000,  # exactly a record of each partition
        base + 119_000,  # the last record of partition 0
        base + 500_000,  # after everything
    ]
    with ops_clients(stack_settings) as (reader, _groups):
        ends = reader.ends(keys)
        assert {key: ends[key].end for key in keys} == {keys[0]: 120, keys[1]: 45, keys[2]: 0}
        for target in targets:
            when = datetime.fromtimestamp(target / 1000, UTC)
            found = offsets_for_time(reader, keys, when, ends=ends)
            broker = reader.broker_offsets_for_time(keys, target)
            for (_, partition), lookup in found.items():
                expected = sum(1 for s in stamps.get(partition, []) if s < target)
                assert lookup.offset == expected, (partition, target)
                answer = broker.get((topic, partition))
                if (
                    answer is None
                    or (answer if answer >= 0 else ends[(topic, partition)].end) != expected
                ):
                    # A wrong (or missing) broker answer must never be taken as is.
                    assert lookup.method == "bisect", (partition, target, answer)
                # Whatever the method, it took a handful of reads, not a scan.
                assert lookup.reads <= 10
        # "Before everything" is 0 for every partition: a broker that always answers 0
        # is right there, and its answer passes the check without bisecting.
        early = offsets_for_time(
            reader, keys, datetime.fromtimestamp((base - 5000) / 1000, UTC), ends=ends
        )
        assert {key: lookup.method for key, lookup in early.items()} == dict.fromkeys(
            keys, "broker"
        )
