"""Dead-letter redrive: fixed records land once, nothing is redriven twice, the cap holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from consumers import WorkerOptions, dead_letter_topic
from consumers.ops import (
    DeadLetter,
    LetterFilter,
    OffsetRange,
    Redriver,
    read_dead_letters,
    redriven_positions,
    summarize,
)
from consumers.ops.redrive import REDRIVE_COUNT_HEADER, REDRIVE_FROM_HEADER
from consumers.records import headers_of
from runtime import Settings
from runtime.clients import kafka_producer
from tests.consumers.ops.support import ops_clients, produce_stamped, read_topic, topic_size
from tests.consumers.support import count_rows
from tests.support.events import audit_event
from tests.support.waiting import wait_for
from tests.support.workers import StartWorker


def _letter(**overrides: Any) -> DeadLetter:
    fields: dict[str, Any] = {
        "dlq_topic": "t.dlq",
        "partition": 0,
        "offset": 10,
        "timestamp_ms": 1_700_000_000_000,
        "key": b"k",
        "value": b"v",
        "headers": [],
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 99,
        "error_class": "CheckViolation",
        "error_message": "23514: ...",
        "dead_lettered_at_ms": 1_700_000_000_000,
        "redrive_count": 0,
    }
    fields.update(overrides)
    return DeadLetter(**fields)


def test_filters_select_by_class_time_and_offsets() -> None:
    at = datetime.fromtimestamp(1_700_000_000, UTC)
    letter = _letter()
    assert LetterFilter().matches(letter)
    assert LetterFilter(error_classes=frozenset({"CheckViolation"})).matches(letter)
    assert not LetterFilter(error_classes=frozenset({"DecodeError"})).matches(letter)
    assert LetterFilter(since=at, until=at + timedelta(seconds=1)).matches(letter)
    assert not LetterFilter(since=at + timedelta(milliseconds=1)).matches(letter)
    assert not LetterFilter(until=at).matches(letter)  # until is exclusive
    assert LetterFilter(offsets=(OffsetRange.parse("0:5-10"),)).matches(letter)
    assert not LetterFilter(
        offsets=(OffsetRange.parse("1:10"), OffsetRange.parse("0:11-20"))
    ).matches(letter)
    assert OffsetRange.parse("2:7") == OffsetRange(2, 7, 7)
    for bad in ("7", "0:9-3", "a:1", "0:-1"):
        with pytest.raises(ValueError, match=r"PARTITION|valid"):
            OffsetRange.parse(bad)


def test_summary_groups_by_class_and_counts_redriven_and_capped() -> None:
    letters = [
        _letter(offset=1),
        _letter(offset=2, redrive_count=3),
        _letter(offset=3, error_class="DecodeError"),
        _letter(offset=4),
    ]
    summary = summarize(letters, redriven={(0, 1): 1_700_000_000_000}, max_redrives=3, samples=2)
    assert [(s.error_class, s.count, s.redriven, s.at_cap) for s in summary] == [
        ("CheckViolation", 3, 1, 1),
        ("DecodeError", 1, 0, 0),
    ]
    assert [x.offset for x in summary[0].samples] == [1, 2]


def test_redrive_after_the_fix_lands_every_dead_letter_exactly_once(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=2)
    dlq = make_topic(name=dead_letter_topic(topic), partitions=1)
    now = int(time.time() * 1000)
    good = [audit_event(i) for i in range(60)]
    bad = [audit_event(1000 + i, action="") for i in range(3)]  # CHECK (action <> '')
    produce_stamped(stack_settings, topic, good, stamps_ms=[now] * 60)
    produce_stamped(stack_settings, topic, bad, stamps_ms=[now] * 3, headers=[("trace-id", b"t-1")])
    produce_stamped(stack_settings, topic, [b"not avro at all"], stamps_ms=[now])  # DecodeError
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker_threads(stack_settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 60, timeout=60)

    with ops_clients(stack_settings) as (reader, _groups):
        assert wait_for(lambda: topic_size(reader, dlq) == 4, timeout=30)
        letters = list(read_dead_letters(reader, dlq))
        summary = {s.error_class: s for s in summarize(letters)}
        assert {name: s.count for name, s in summary.items()} == {
            "CheckViolation": 3,
            "DecodeError": 1,
        }
        check_letters = list(
            read_dead_letters(
                reader, dlq, LetterFilter(error_classes=frozenset({"CheckViolation"}))
            )
        )
        assert [x.source_topic for x in check_letters] == [topic] * 3
        assert all(x.headers == [("trace-id", b"t-1")] for x in check_letters)
        source_ends = {k: e.end for k, e in reader.ends([(topic, 0), (topic, 1)]).items()}

        producer = kafka_producer(stack_settings)
        redriver = Redriver(producer=producer, conn=pg_conn, schema=sink_schema)

        # Dry run: reports, sends nothing, records nothing.
        dry = redriver.redrive(check_letters, dry_run=True)
        assert (len(dry.redriven), dry.dry_run) == (3, True)
        assert redriven_positions(pg_conn, sink_schema, dlq) == {}
        assert {k: e.end for k, e in reader.ends(list(source_ends)).items()} == source_ends

        # The cause is fixed: the constraint goes. Redrive → the three rows land.
        pg_conn.execute(
            f'ALTER TABLE "{sink_schema}".audit_events DROP CONSTRAINT audit_events_action_check'
        )
        first = redriver.redrive(check_letters)
        assert len(first.redriven) == 3
        assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 63, timeout=60)
        assert set(redriven_positions(pg_conn, sink_schema, dlq)) == {
            x.position for x in check_letters
        }

        # Re-running (a fresh redriver, same letters and all others) sends nothing more.
        again = Redriver(producer=producer, conn=pg_conn, schema=sink_schema).redrive(
            read_dead_letters(
                reader, dlq, LetterFilter(error_classes=frozenset({"CheckViolation"}))
            )
        )
        assert (len(again.redriven), len(again.already_redriven)) == (0, 3)
        after = {k: e.end for k, e in reader.ends(list(source_ends)).items()}
        assert sum(after.values()) == sum(source_ends.values()) + 3
        producer.flush(10)

        # The copies carry the original key, value and headers plus the redrive headers.
        copies = [
            m
            for m in read_topic(reader, topic)
            if any(name == REDRIVE_COUNT_HEADER for name, _ in headers_of(m))
        ]
    assert len(copies) == 3
    for copy in copies:
        headers = dict(headers_of(copy))
        assert headers["trace-id"] == b"t-1"
        assert headers[REDRIVE_COUNT_HEADER] == b"1"
        origin = headers[REDRIVE_FROM_HEADER]
        assert isinstance(origin, bytes)
        assert origin.startswith(f"{dlq}:0:".encode())
        assert not any(name.startswith("sidestream.dlq.") for name in headers)
    assert {(c.key(), c.value()) for c in copies} == {(x.key, x.value) for x in check_letters}
    rows = pg_conn.execute(
        f'SELECT count(*), count(DISTINCT event_id) FROM "{sink_schema}".audit_events'
    ).fetchone()
    assert rows == (63, 63)


def test_a_record_at_the_redrive_cap_is_skipped_and_reported(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    dlq = make_topic(name=dead_letter_topic(topic), partitions=1)
    produce_stamped(
        stack_settings, topic, [audit_event(1, action="")], stamps_ms=[int(time.time() * 1000)]
    )
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker_threads(stack_settings, options)

    producer = kafka_producer(stack_settings)
    with ops_clients(stack_settings) as (reader, _groups):
        assert wait_for(lambda: topic_size(reader, dlq) == 1, timeout=60)
        # Not fixed: the redriven copy fails again and comes back carrying count 1.
        redriver = Redriver(producer=producer, conn=pg_conn, schema=sink_schema, max_redrives=1)
        assert len(redriver.redrive(read_dead_letters(reader, dlq)).redriven) == 1
        assert wait_for(lambda: topic_size(reader, dlq) == 2, timeout=60)
        letters = list(read_dead_letters(reader, dlq))
        assert [x.redrive_count for x in letters] == [0, 1]
        assert letters[1].source_offset == 1  # the redriven copy's own position

        report = Redriver(
            producer=producer, conn=pg_conn, schema=sink_schema, max_redrives=1
        ).redrive(letters)
        assert report.redriven == ()
        assert [x.offset for x in report.already_redriven] == [0]
        assert [x.offset for x in report.at_cap] == [1]
        summary = summarize(
            letters, redriven=redriven_positions(pg_conn, sink_schema, dlq), max_redrives=1
        )
        assert [(s.count, s.redriven, s.at_cap) for s in summary] == [(2, 1, 1)]
    assert count_rows(pg_conn, sink_schema, "audit_events") == 0


def test_a_record_dead_lettered_twice_is_redriven_once(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    dlq = make_topic(name=dead_letter_topic(topic), partitions=1)
    produce_stamped(
        stack_settings, topic, [audit_event(1, action="")], stamps_ms=[int(time.time() * 1000)]
    )
    # Two groups read the topic (as a replay does): the poison record is dead-lettered twice.
    for name in ("g1", "g2"):
        worker_threads(
            stack_settings,
            WorkerOptions("audit", group_id=unique(name), topics=(topic,), schema=sink_schema),
        )
    producer = kafka_producer(stack_settings)
    with ops_clients(stack_settings) as (reader, _groups):
        assert wait_for(lambda: topic_size(reader, dlq) == 2, timeout=60)
        letters = list(read_dead_letters(reader, dlq))
        assert len({x.source for x in letters}) == 1

        pg_conn.execute(
            f'ALTER TABLE "{sink_schema}".audit_events DROP CONSTRAINT audit_events_action_check'
        )
        first = Redriver(producer=producer, conn=pg_conn, schema=sink_schema).redrive(letters)
        assert ([x.offset for x in first.redriven], [x.offset for x in first.repeats]) == ([0], [1])
        again = Redriver(producer=producer, conn=pg_conn, schema=sink_schema).redrive(letters)
        assert (len(again.redriven), len(again.already_redriven), len(again.repeats)) == (0, 1, 1)
        assert topic_size(reader, topic) == 2  # the original and one copy
    # Both groups land the one copy; each table holds the row once.
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 1, timeout=60)


def test_a_truncated_reference_is_never_redriven(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = make_topic("audit", partitions=1)
    dlq = dead_letter_topic(topic)
    reference = _letter(dlq_topic=dlq, source_topic=topic, offset=3, truncated=True)
    whole = _letter(dlq_topic=dlq, source_topic=topic, offset=4, source_offset=100)
    producer = kafka_producer(stack_settings)
    report = Redriver(producer=producer, conn=pg_conn, schema=sink_schema).redrive(
        [reference, whole]
    )
    assert report.truncated == (reference,)
    assert report.redriven == (whole,)
    assert f"replay it from {topic}[0]@99" in caplog.text
    with ops_clients(stack_settings) as (reader, _groups):
        assert topic_size(reader, topic) == 1  # only the whole record went back
