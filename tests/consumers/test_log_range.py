"""Stored offsets outside the log: refused with one named line, or reset — never followed."""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from consumers.log_range import OffsetOutOfRange
from consumers.ops.positions import move_offsets, stored_offsets
from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.clients import kafka_admin
from tests.consumers.support import count_rows, produce
from tests.support.events import audit_event
from tests.support.waiting import wait_for

StartWorker = Callable[[Settings, WorkerOptions], EmbeddedWorker]


def _refusals(caplog: pytest.LogCaptureFixture, topic: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and f"{topic}[0] stored offset" in r.getMessage()
    ]


def test_describes_the_condition_and_the_fix() -> None:
    past = OffsetOutOfRange("t", 2, stored=7, start=0, end=3)
    assert past.past_end
    assert past.where == "past the end"
    assert past.describe("g") == (
        "group g: t[2] stored offset 7 is past the end of the log (start 0, end 3)"
    )
    assert past.fix_command("g") == (
        "sidestream replay --group g --topic t --partitions 2 --from-beginning --force"
    )
    assert OffsetOutOfRange("t", 0, stored=1, start=5, end=9).where == "before the start"


def test_an_offset_past_the_end_is_refused_until_an_operator_moves_it(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The log holds 3 records, Postgres says the group is at 7 (as after a broker restart).
    topic = make_topic("audit", partitions=1)
    group = unique("g")
    produce(stack_settings, topic, (audit_event(i) for i in range(3)))
    move_offsets(pg_conn, sink_schema, group, {(topic, 0): 7}, owner="test")
    settings = stack_settings.with_overrides(consumer_offset_check_interval_s=0.5)
    caplog.set_level(logging.INFO)
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)

    gauge = {"sink": "audit", "topic": topic, "partition": "0"}
    assert wait_for(
        lambda: worker.metric("sidestream_consumer_offset_out_of_range", **gauge) == 1,
        timeout=60,
    )
    assert not worker.ready()
    # The log grows past the stored offset: still refused, nothing read from 7 on.
    produce(stack_settings, topic, (audit_event(i) for i in range(3, 9)))
    time.sleep(3)
    assert count_rows(pg_conn, sink_schema, "audit_events") == 0
    assert not worker.ready()
    lines = _refusals(caplog, topic)
    assert len(lines) == 1, lines
    assert f"group {group}: {topic}[0] stored offset 7 is past the end of the log" in lines[0]
    assert "(start 0, end 3)" in lines[0]

    # The command the line names fixes it; the worker notices and reads everything.
    command = re.search(r"`(sidestream replay [^`]+)`", lines[0])
    assert command is not None, lines[0]
    env = {
        **os.environ,
        "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SIDESTREAM_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
        "SIDESTREAM_POSTGRES_SCHEMA": sink_schema,
    }
    argv = [sys.executable, "-m", *shlex.split(command.group(1))]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 9, timeout=60)
    assert wait_for(worker.ready, timeout=10)
    assert worker.metric("sidestream_consumer_offset_out_of_range", **gauge) == 0
    assert worker.shutdown() == 0
    assert stored_offsets(pg_conn, sink_schema, group) == {(topic, 0): 9}


@pytest.mark.parametrize(("policy", "rows", "position"), [("earliest", 3, 3), ("latest", 0, 3)])
def test_policies_earliest_and_latest_reset_the_stored_offset(
    stack_settings: Settings,
    make_topic: Callable[..., str],
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    policy: str,
    rows: int,
    position: int,
) -> None:
    topic = make_topic("audit", partitions=1)
    group = unique("g")
    produce(stack_settings, topic, (audit_event(i) for i in range(3)))
    move_offsets(pg_conn, sink_schema, group, {(topic, 0): 7}, owner="test")
    settings = stack_settings.with_overrides(consumer_offset_out_of_range=policy)
    options = WorkerOptions("audit", group_id=group, topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    assert wait_for(
        lambda: (
            worker.metric("sidestream_consumer_offset_resets_total", sink="audit", policy=policy)
            == 1
        ),
        timeout=60,
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == rows, timeout=30)
    produce(stack_settings, topic, (audit_event(i) for i in range(3, 5)))
    assert wait_for(
        lambda: count_rows(pg_conn, sink_schema, "audit_events") == rows + 2, timeout=30
    )
    assert worker.ready()
    assert worker.shutdown() == 0
    assert stored_offsets(pg_conn, sink_schema, group) == {(topic, 0): position + 2}


@pytest.mark.chaos
def test_a_broker_restart_under_a_running_worker_is_caught_and_earliest_rereads_it(
    stack_settings: Settings,
    private_kafka: KafkaServer,
    sink_schema: str,
    pg_conn: psycopg.Connection[Any],
    worker_threads: StartWorker,
    unique: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The in-memory broker restarts (as a topic deleted and recreated would): the running
    worker's position is now past the new end, where fetches answer silence."""
    settings = stack_settings.with_overrides(
        kafka_bootstrap_servers=private_kafka.address, consumer_offset_check_interval_s=0.5
    )
    topic = unique("audit")
    admin = kafka_admin(settings)

    def create_topic() -> None:
        admin.create_topics([_new_topic(topic)])[topic].result(timeout=15)

    create_topic()
    produce(settings, topic, (audit_event(i) for i in range(5)))
    caplog.set_level(logging.INFO)
    options = WorkerOptions("audit", group_id=unique("g"), topics=(topic,), schema=sink_schema)
    worker = worker_threads(settings, options)
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 5, timeout=60)

    private_kafka.stop()
    private_kafka.start()
    create_topic()
    produce(settings, topic, (audit_event(i) for i in range(5, 7)))  # 2 < the stored 5
    gauge = {"sink": "audit", "topic": topic, "partition": "0"}
    assert wait_for(
        lambda: worker.metric("sidestream_consumer_offset_out_of_range", **gauge) == 1,
        timeout=90,
    )
    assert not worker.ready()
    assert count_rows(pg_conn, sink_schema, "audit_events") == 5
    assert len(_refusals(caplog, topic)) == 1
    assert worker.shutdown() == 0

    # A worker started now with offsets left in Postgres: earliest re-reads the new log.
    rereader = worker_threads(
        settings.with_overrides(consumer_offset_out_of_range="earliest"), options
    )
    assert wait_for(lambda: count_rows(pg_conn, sink_schema, "audit_events") == 7, timeout=60)
    assert rereader.ready()
    assert rereader.shutdown() == 0


def _new_topic(name: str) -> NewTopic:
    return NewTopic(name, num_partitions=1, replication_factor=1)
