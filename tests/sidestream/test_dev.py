"""``sidestream dev reset-topics`` on a private broker (the shared one keeps its topics)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import TopicPartition
from psycopg import sql

from consumers import CONSUMER_MIGRATIONS
from devtools.localstack.kafka import KafkaServer
from runtime import Settings
from runtime.clients import kafka_consumer, kafka_producer
from runtime.migrations import migrate
from tests.sidestream.support import cli, live_servers


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    broker = KafkaServer(stack_dir=tmp_path / "broker", port=port)
    broker.start()
    yield f"127.0.0.1:{port}"
    broker.stop()


def test_reset_topics_empties_the_topics_and_forgets_their_offsets(
    tmp_path: Path,
    stack_settings: Settings,
    pg_conn: psycopg.Connection[Any],
    pg_schema: str,
    private_broker: str,
) -> None:
    settings = {**live_servers(stack_settings), "kafka_bootstrap_servers": private_broker}
    assert cli(tmp_path, "topics", "apply", **settings).returncode == 0
    kafka = stack_settings.with_overrides(kafka_bootstrap_servers=private_broker)
    producer = kafka_producer(kafka)
    for i in range(20):
        producer.produce("sidestream.audit", b"x", partition=0, key=str(i).encode())
    assert producer.flush(15) == 0
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    table = sql.Identifier(pg_schema, "consumer_offsets")
    for topic in ("sidestream.audit", "someone.elses"):
        pg_conn.execute(
            sql.SQL(
                "INSERT INTO {} (group_id, topic, partition, next_offset, generation, owner)"
                " VALUES ('g', %s, 0, 20, 1, 'w')"
            ).format(table),
            (topic,),
        )

    refused = cli(tmp_path, "dev", "reset-topics", "--schema", pg_schema, **settings)
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr

    result = cli(tmp_path, "dev", "reset-topics", "--yes", "--schema", pg_schema, **settings)
    assert result.returncode == 0, result.stderr
    assert "deleted sidestream.audit\n" in result.stdout
    assert "created sidestream.audit (6 partitions" in result.stdout
    assert f"forgot 1 row(s) of consumer_offsets in schema {pg_schema}" in result.stdout
    left = pg_conn.execute(sql.SQL("SELECT topic FROM {}").format(table)).fetchall()
    assert left == [("someone.elses",)]
    consumer = kafka_consumer(kafka, "reset-check")
    try:
        _low, high = consumer.get_watermark_offsets(
            TopicPartition("sidestream.audit", 0), timeout=10
        )
    finally:
        consumer.close()
    assert high == 0


def test_reset_topics_is_refused_outside_the_local_profile(tmp_path: Path) -> None:
    result = cli(tmp_path, "dev", "reset-topics", "--yes", profile="production")
    assert result.returncode == 2
    assert result.stderr.startswith("error: dev reset-topics deletes every record")
