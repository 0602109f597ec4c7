"""Dead letters grouped by error class, as ``sidestream dlq show`` and the console show
them: counts, first and last time, a few samples, how many were redriven already and how
many are at the redrive cap. Memory is bounded by the number of classes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from consumers.ops.ledger import redriven_positions
from consumers.ops.letters import DeadLetter, LetterFilter, read_dead_letters
from consumers.ops.positions import has_table
from consumers.ops.reader import TopicReader


@dataclass(slots=True)
class ErrorClassSummary:
    """The dead letters of one error class."""

    error_class: str
    count: int = 0
    redriven: int = 0  # already sent back (by an earlier redrive)
    at_cap: int = 0  # not redriven yet, but at the redrive cap
    first_at: datetime | None = None
    last_at: datetime | None = None
    samples: list[DeadLetter] = field(default_factory=list)
    source_topics: Counter[str] = field(default_factory=Counter)


def summarize(
    letters: Iterable[DeadLetter],
    *,
    redriven: dict[tuple[int, int], int] | None = None,
    max_redrives: int = 3,
    samples: int = 3,
) -> list[ErrorClassSummary]:
    """Dead letters grouped by error class, the largest group first; memory is bounded
    by the number of classes (``samples`` letters kept per class)."""
    done = redriven or {}
    classes: dict[str, ErrorClassSummary] = {}
    # Times are compared as milliseconds and made datetimes once per class at the end:
    # a summary may run over hundreds of thousands of letters.
    span: dict[str, tuple[int, int]] = {}
    for letter in letters:
        name = letter.error_class
        entry = classes.get(name)
        if entry is None:
            entry = classes[name] = ErrorClassSummary(name)
        entry.count += 1
        entry.source_topics[letter.source_topic] += 1
        if done.get((letter.partition, letter.offset)) == letter.timestamp_ms:
            entry.redriven += 1
        elif letter.redrive_count >= max_redrives:
            entry.at_cap += 1
        at = letter.dead_lettered_at_ms
        first, last = span.get(name, (at, at))
        span[name] = (min(first, at), max(last, at))
        if len(entry.samples) < samples:
            entry.samples.append(letter)
    for name, (first, last) in span.items():
        classes[name].first_at = datetime.fromtimestamp(first / 1000, UTC)
        classes[name].last_at = datetime.fromtimestamp(last / 1000, UTC)
    return sorted(classes.values(), key=lambda e: (-e.count, e.error_class))


# --- what the CLI and the console both do -----------------------------------------------
def dead_letter_summary(
    *,
    conn: psycopg.Connection[Any],
    reader: TopicReader,
    schema: str,
    dlq_topic: str,
    letter_filter: LetterFilter | None = None,
    max_redrives: int = 3,
    samples: int = 3,
    letters: Iterable[DeadLetter] | None = None,
) -> list[ErrorClassSummary]:
    """``dlq_topic`` grouped by error class, counting what the ledger says was redriven
    (no ledger table yet: nothing was). ``letters`` (already read, e.g. kept by a
    long-running process) replaces reading the topic; the filter applies to them too."""
    done = (
        redriven_positions(conn, schema, dlq_topic)
        if has_table(conn, schema, "dlq_redrives")
        else {}
    )
    if letters is None:
        letters = read_dead_letters(reader, dlq_topic, letter_filter)
    elif letter_filter is not None and letter_filter != LetterFilter():
        letters = (x for x in letters if letter_filter.matches(x))
    return summarize(
        letters,
        redriven=done,
        max_redrives=max_redrives,
        samples=samples,
    )
