"""Poison records go to the dead-letter topic with their story; their batch still lands."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Message

from consumers import DeadLetters, WorkerOptions, dead_letter_topic
from consumers.dead_letters import DEFAULT_MAX_MESSAGE_BYTES, dead_letter_max_bytes
from consumers.embedded import EmbeddedWorker
from consumers.ops import DeadLetter
from consumers.records import RawRecord, headers_of
from runtime import Settings
from runtime.clients import kafka_admin, kafka_producer
from schemas import ChangeKind, EntityChanged, EventSerializer
from tests.consumers.support import count_rows, produce, read_all
from tests.support.events import audit_event
from tests.support.waiting import wait_for


def test_poison_records_are_dead_lettered_and_the_rest_lands(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: Callable[[Settings, WorkerOptions], EmbeddedWorker],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    make_topic(name=dead_letter_topic(topic), partitions=1)
    good = [audit_event(i) for i in range(200)]
    violating = audit_event(999, action="")  # CHECK (action <> '') → SQLSTATE 23514
    wrong_type = EntityChanged.new(
        tenant_id="t",
        producer="tests",
        entity_type="order",
        entity_id="1",
        version=2,
        change_kind=ChangeKind.UPDATED,
    )
    unknown_fingerprint = b"\xc3\x01" + os.urandom(8) + b"\x02ab"
    # Confluent framing (magic byte 0) while no registry is configured: never decodable here.
    confluent_framed = b"\x00\x00\x00\x00\x07\x02ab"
    # Random bytes that start like neither framing.
    garbage = b"\x7f" + os.urandom(40)
    stream: list[Any] = [
        *good[:50],
        garbage,
        *good[50:120],
        violating,
        *good[120:180],
        wrong_type,
        unknown_fingerprint,
        confluent_framed,
        *good[180:],
    ]
    produce(stack_settings, topic, stream)

    worker = worker_threads(
        stack_settings,
        WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema),
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 200, timeout=60)
    letters = read_all(stack_settings, dead_letter_topic(topic), expect=5)
    assert worker.shutdown() == 0

    assert len(letters) == 5
    by_class: dict[str, tuple[Message, dict[str, bytes]]] = {}
    classes: Counter[str] = Counter()
    for message in letters:
        headers = {k: v for k, v in headers_of(message) if isinstance(v, bytes)}
        assert headers["sidestream.dlq.source.topic"] == topic.encode()
        assert headers["sidestream.dlq.source.partition"] == b"0"
        assert int(headers["sidestream.dlq.source.offset"]) in range(len(stream))
        assert headers["sidestream.dlq.worker"]
        assert int(headers["sidestream.dlq.time"]) > 0
        by_class[headers["sidestream.dlq.error.class"].decode()] = (message, headers)
        classes[headers["sidestream.dlq.error.class"].decode()] += 1
    assert set(by_class) == {
        "DecodeError",
        "CheckViolation",
        "WrongEventType",
        "UnknownSchemaError",
    }
    assert classes["UnknownSchemaError"] == 2  # unknown fingerprint + Confluent w/o registry
    check_message, check_headers = by_class["CheckViolation"]
    assert int(check_headers["sidestream.dlq.source.offset"]) == 121
    assert b"23514" in check_headers["sidestream.dlq.error.message"]
    # The original bytes travel unchanged so the record can be redriven once fixed.
    assert check_message.value() == EventSerializer().serialize(violating, topic)
    assert (
        worker.metric("sidestream_dead_letters_total", sink="audit", error_class="CheckViolation")
        == 1
    )
    stored = pg_conn.execute(
        f'SELECT next_offset FROM "{sink_schema}".consumer_offsets WHERE topic = %s', (topic,)
    ).fetchone()
    assert stored == (len(stream),)


def _dlq_headers(message: Message) -> dict[str, bytes]:
    return {k: v for k, v in headers_of(message) if isinstance(v, bytes)}


def test_records_too_large_for_the_dead_letter_topic_go_as_references_once(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: Callable[[Settings, WorkerOptions], EmbeddedWorker],
    unique: Callable[[str], str],
) -> None:
    topic = make_topic("audit", partitions=1)
    make_topic(name=dead_letter_topic(topic), partitions=1)
    huge = b"\x7f" + b"h" * 5_000_000  # 5 MB of poison
    # 999 KB fits the dead-letter topic alone; its headers and ours push it over.
    near = b"\x7f" + b"n" * 999_000
    serializer = EventSerializer()
    producer = kafka_producer(stack_settings, **{"message.max.bytes": 10_000_000})
    for i in range(150):
        if i == 50:
            producer.produce(topic, value=huge, key=b"huge")
        if i == 100:
            producer.produce(topic, value=near, key=b"near", headers=[("trace", b"t" * 1500)])
        event = audit_event(i)
        producer.produce(topic, value=serializer.serialize(event, topic), key=event.key)
    assert producer.flush(30) == 0

    worker = worker_threads(
        stack_settings,
        WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema),
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 150, timeout=60)
    assert worker.ready()
    letters = read_all(stack_settings, dead_letter_topic(topic), expect=3, timeout=5)
    assert len(letters) == 2  # each bad record once
    for letter, original, offset in ((letters[0], huge, 50), (letters[1], near, 101)):
        headers = _dlq_headers(letter)
        assert headers["sidestream.dlq.truncated"] == b"true"
        assert int(headers["sidestream.dlq.source.offset"]) == offset
        assert int(headers["sidestream.dlq.original.size"]) == len(original)
        assert (
            headers["sidestream.dlq.original.sha256"]
            == hashlib.sha256(original).hexdigest().encode()
        )
        assert letter.value() == original[:1024]
        assert headers["sidestream.dlq.error.class"] == b"DecodeError"
        assert DeadLetter.from_message(letter).truncated  # redrive will not send it back
    assert worker.shutdown() == 0


def test_a_dead_letter_is_sent_once_however_often_its_batch_is_retried(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("audit", partitions=1)
    make_topic(name=dead_letter_topic(topic), partitions=1)
    letters = DeadLetters(kafka_producer(stack_settings), worker="test")
    raw = RawRecord(topic, 0, 5, b"k", b"\x7fbad", [], 0)
    letters.send(raw, error_class="DecodeError", message="bad")
    letters.flush(10)
    # The batch failed after its dead letters were acknowledged, and is retried.
    letters.send(raw, error_class="DecodeError", message="bad")
    letters.flush(10)
    assert len(read_all(stack_settings, dead_letter_topic(topic), expect=2, timeout=5)) == 1
    # Committed: a later read of the same record (a replay) dead-letters it again.
    letters.forget_before({(topic, 0): 6})
    letters.send(raw, error_class="DecodeError", message="bad")
    letters.flush(10)
    assert len(read_all(stack_settings, dead_letter_topic(topic), expect=2, timeout=30)) == 2


def test_a_producer_limit_below_the_estimate_still_gets_a_reference(
    stack_settings: Settings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("audit", partitions=1)
    make_topic(name=dead_letter_topic(topic), partitions=1)
    # Told the topic takes 1 MB, while the producer stops at 100 KB: librdkafka refuses.
    producer = kafka_producer(stack_settings, **{"message.max.bytes": 100_000})
    letters = DeadLetters(producer, worker="test", max_message_bytes=1_000_000)
    value = b"\x7f" + b"v" * 300_000
    letters.send(RawRecord(topic, 0, 9, None, value, [], 0), error_class="X", message="m")
    letters.flush(10)
    (letter,) = read_all(stack_settings, dead_letter_topic(topic), expect=1)
    assert _dlq_headers(letter)["sidestream.dlq.truncated"] == b"true"
    assert letter.value() == value[:1024]


def test_a_stop_request_ends_the_wait_for_max_message_bytes(stack_settings: Settings) -> None:
    """With the brokers away, reading the dead-letter topics' limit at a worker's start
    would hold a SIGTERM for its whole timeout: a stop request ends the wait."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        away = stack_settings.model_copy(
            update={"kafka_bootstrap_servers": f"127.0.0.1:{holder.getsockname()[1]}"}
        )
        stop = threading.Event()
        found: list[int] = []
        reader = threading.Thread(
            target=lambda: found.append(
                dead_letter_max_bytes(kafka_admin(away), ["t.dlq"], timeout_s=60, stop=stop)
            ),
            daemon=True,
        )
        reader.start()
        stop.set()
        reader.join(timeout=10)  # generous next to the 60 s it would wait
    assert not reader.is_alive()
    assert found == [DEFAULT_MAX_MESSAGE_BYTES]
