"""From a point in time to an offset, per partition — checked, with a portable fallback.

Kafka answers "the first offset whose timestamp is ≥ t" with ``offsets_for_times``, but
not every Kafka-protocol broker answers it right (the local tansu returns 0 for every
time). So the broker's answer is *verified* by reading: the message at the answer must
be stamped ≥ t and the one before it < t (any correct answer passes, whatever the
broker). When it fails, the offset is found by bisecting on the timestamps of single
messages read at candidate offsets — all partitions in lock-step, about log2(n) rounds.

Bisecting assumes timestamps grow with offsets, as they do for broker-assigned
(LogAppendTime) stamps and nearly do for producer-assigned ones; with out-of-order
producer stamps the result is still an offset whose predecessor is older than t.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from consumers.ops.reader import EndOffsets, Key, Peek, TopicReader

logger = logging.getLogger(__name__)

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_RELATIVE_ALL = re.compile(r"(?:\d+[smhdw])+")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime) -> datetime:
    """``2h``, ``1h30m``, ``7d`` (that long before ``now``) or an ISO 8601 time.

    An ISO time without an offset is taken as UTC.

    Raises:
        ValueError: neither form.
    """
    compact = text.strip().lower().replace(" ", "")
    if _RELATIVE_ALL.fullmatch(compact):
        delta = timedelta()
        for amount, unit in _RELATIVE.findall(compact):
            delta += timedelta(**{_UNITS[unit]: int(amount)})
        return now - delta
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a relative time (e.g. 2h, 1h30m, 7d) nor ISO 8601 "
            "(e.g. 2025-06-01T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up: "stamp ≥ moment" ⇔ "stamp ≥ epoch_ms"."""
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1000)


@dataclass(frozen=True, slots=True)
class TimeLookup:
    """Where a partition's records at or after a time begin."""

    offset: int
    method: Literal["broker", "bisect"]  # the broker's answer held, or it was bisected
    reads: int  # single-message reads it took (verification included)


def _stamp(peek: Peek | None) -> int | None:
    return None if peek is None else peek.timestamp_ms


def offsets_for_time(
    reader: TopicReader,
    keys: Iterable[Key],
    when: datetime,
    *,
    ends: Mapping[Key, EndOffsets],
) -> dict[Key, TimeLookup]:
    """The first offset of each partition whose message timestamp is ≥ ``when``.

    ``ends`` are the partitions' true ends (:meth:`TopicReader.ends`); a partition with
    nothing that recent gets its end offset.
    """
    wanted = list(keys)
    target = epoch_ms(when)
    answers = reader.broker_offsets_for_time(wanted, target)
    candidates: dict[Key, int] = {}
    for key in wanted:
        answer = answers.get(key)
        if answer is None:
            continue
        candidate = ends[key].end if answer < 0 else answer
        if ends[key].low <= candidate <= ends[key].end:
            candidates[key] = candidate

    verified = _verify(reader, candidates, target, ends)
    found = {key: TimeLookup(candidates[key], "broker", reads) for key, reads in verified.items()}
    rest = [key for key in wanted if key not in found]
    if rest:
        logger.info(
            "offsets_for_times answer failed verification for %d partition(s); bisecting",
            len(rest),
        )
        found.update(_bisect(reader, rest, target, ends))
    return found


def _verify(
    reader: TopicReader, candidates: Mapping[Key, int], target: int, ends: Mapping[Key, EndOffsets]
) -> dict[Key, int]:
    """The candidates that hold, with the reads it took: ts(at) ≥ t > ts(at - 1)."""
    at = reader.peek({k: o for k, o in candidates.items() if o < ends[k].end})
    before = reader.peek({k: o - 1 for k, o in candidates.items() if o > ends[k].low})
    holding = {}
    for key, offset in candidates.items():
        reads = 0
        if offset < ends[key].end:
            reads += 1
            peek = at.get(key)
            stamp = _stamp(peek)
            if peek is None or peek.offset != offset or stamp is None or stamp < target:
                continue
        if offset > ends[key].low:
            reads += 1
            peek = before.get(key)
            stamp = _stamp(peek)
            # A gap (e.g. a transaction marker) before the answer: cannot tell, bisect.
            if peek is None or peek.offset != offset - 1 or (stamp is not None and stamp >= target):
                continue
        holding[key] = reads
    return holding


def _bisect(
    reader: TopicReader, keys: list[Key], target: int, ends: Mapping[Key, EndOffsets]
) -> dict[Key, TimeLookup]:
    # Invariant per partition: every message below ``lo`` is older than the target; the
    # first message at or after ``hi`` (if any below the end) is not.
    lo = {key: ends[key].low for key in keys}
    hi = {key: ends[key].end for key in keys}
    reads = dict.fromkeys(keys, 0)
    while True:
        open_ = [key for key in keys if lo[key] < hi[key]]
        if not open_:
            break
        middles = {key: (lo[key] + hi[key]) // 2 for key in open_}
        peeks = reader.peek(middles)
        for key, middle in middles.items():
            reads[key] += 1
            peek = peeks.get(key)
            stamp = _stamp(peek)
            if peek is None or peek.offset >= hi[key] or (stamp is not None and stamp >= target):
                hi[key] = middle
            else:  # older than the target (or unstamped): the answer lies after it
                lo[key] = peek.offset + 1
    return {key: TimeLookup(lo[key], "bisect", reads[key]) for key in keys}
