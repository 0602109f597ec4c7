"""The console's dead-letter tally gives the same summary as ``consumers.ops.summarize``
over the same letters (pure logic: no servers)."""

from __future__ import annotations

import random

import pytest

from consumers.ops import DeadLetter, summarize
from services.console.dead_letters import DeadLetterTally

_CLASSES = ("CheckViolation", "DecodeError", "WrongType")


def _letters(n: int, seed: int) -> list[DeadLetter]:
    """``n`` letters over three partitions, interleaved as a scan yields them."""
    rng = random.Random(seed)
    next_offset = {0: 0, 1: 5, 2: 100}
    letters = []
    for i in range(n):
        partition = rng.choice((0, 1, 2))
        offset = next_offset[partition] + rng.choice((1, 1, 1, 3))  # some gaps (markers)
        next_offset[partition] = offset
        letters.append(
            DeadLetter(
                dlq_topic="t.dlq",
                partition=partition,
                offset=offset,
                timestamp_ms=1_000 + i,
                key=None,
                value=None,
                headers=[],
                source_topic=rng.choice(("t", "u")),
                source_partition=0,
                source_offset=i,
                error_class=rng.choice(_CLASSES),
                error_message="m",
                dead_lettered_at_ms=rng.randrange(1_000_000, 2_000_000),
                redrive_count=rng.choice((0, 0, 1, 3, 4)),
            )
        )
    return letters


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tally_summary_equals_summarize(seed: int) -> None:
    letters = _letters(2_000, seed)
    rng = random.Random(seed)
    ledger = {(x.partition, x.offset): x.timestamp_ms for x in rng.sample(letters, 300)}
    ledger.update({(x.partition, x.offset): 0 for x in rng.sample(letters, 50)})  # stale
    ledger[(7, 1)] = 5  # a position never indexed
    tally = DeadLetterTally(max_redrives=3)
    for letter in letters:
        tally.add(letter)

    assert len(tally) == len(letters)
    for samples in (0, 3, 5):
        expected = summarize(letters, redriven=ledger, max_redrives=3, samples=samples)
        assert tally.summary(redriven=ledger, samples=samples) == expected
    assert any(entry.redriven and entry.at_cap for entry in expected)  # both counted


def test_tally_refuses_a_partition_out_of_order() -> None:
    first, second = _letters(2, seed=4)
    tally = DeadLetterTally()
    tally.add(first)
    with pytest.raises(ValueError, match="offset order"):
        tally.add(first)
    tally.add(second)
