"""Servers that are away: librdkafka's log and psycopg's pool warnings become one
readable, rate-limited line; bad client properties and schema names fail as config."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import KafkaError

from runtime import ConfigError, Settings
from runtime.clients import (
    check_schema,
    kafka_admin,
    kafka_consumer,
    kafka_producer,
    postgres_connect,
    postgres_pool,
)
from runtime.outages import KafkaLogReporter, PoolLogFilter, reporter_for

REFUSED = (
    "[thrd:127.0.0.1:9/bootstrap]: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 "
    "failed: Connection refused (after 0ms in state CONNECT)"
)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A port bound but never listening: connections are refused, and no one else can
    take it while the test runs."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def _reporter(clock: _Clock, caplog: pytest.LogCaptureFixture) -> KafkaLogReporter:
    caplog.set_level(logging.DEBUG, logger="test.kafka")
    return KafkaLogReporter(clock=clock, interval_s=60, sink=logging.getLogger("test.kafka"))


def test_a_refused_connection_becomes_one_line_with_address_reason_and_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    reporter = _reporter(clock, caplog)
    reporter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#producer-1", REFUSED)
    assert [r.getMessage() for r in caplog.records] == [
        "cannot reach Kafka at 127.0.0.1:9 (connection refused); retrying — "
        "is the stack up? `make up`"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_repeats_are_held_back_and_counted_then_reported_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    reporter = _reporter(clock, caplog)
    for _ in range(50):
        reporter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-2", REFUSED)
        clock.now += 1
    # The same outage through the error callback of another client: still held back.
    reporter.error(KafkaError(KafkaError._TRANSPORT, REFUSED.split("]: ", 1)[1]))
    reporter.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert len(caplog.records) == 1
    clock.now += 20
    reporter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-2", REFUSED)
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().endswith("(50 more in the last 60s)")


def test_readiness_follows_the_last_unreachable_event() -> None:
    clock = _Clock()
    reporter = KafkaLogReporter(clock=clock, down_for_s=25, sink=logging.getLogger("test.k"))
    assert reporter.reachable()
    reporter.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)
    assert not reporter.reachable()
    clock.now += 26
    assert reporter.reachable()


def test_production_names_the_setting_and_unknown_lines_pass_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="test.kafka")
    reporter = KafkaLogReporter(profile="production", sink=logging.getLogger("test.kafka"))
    reporter.log(
        logging.ERROR,
        "%s [%s] %s",
        "FAIL",
        "rdkafka#producer-1",
        "kafka-0:9092/bootstrap: Failed to resolve 'kafka-0:9092': Name or service not known "
        "(after 3ms in state CONNECT)",
    )
    reporter.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "odd config")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "cannot reach Kafka at kafka-0:9092 (cannot resolve host: name or service not known); "
        "retrying — check SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS and that the server is up"
    )
    assert messages[1] == "Kafka: odd config"


def test_pool_reconnect_warnings_become_one_line() -> None:
    clock = _Clock()
    pool_filter = PoolLogFilter(clock=clock, interval_s=60)
    failure = (
        'connection failed: connection to server at "127.0.0.1", port 5999 failed: '
        "Connection refused\n\tIs the server running on that host and accepting TCP/IP "
        "connections?"
    )

    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "psycopg.pool", logging.WARNING, "", 0, "error connecting in %r: %s",
            ("audit-sink", failure), None,
        )  # fmt: skip

    first = record()
    assert pool_filter.filter(first)
    assert first.getMessage() == (
        "cannot reach Postgres at 127.0.0.1:5999 (connection refused); pool audit-sink "
        "retrying — is the stack up? `make up`"
    )
    assert not pool_filter.filter(record())
    clock.now += 61
    assert pool_filter.filter(record())
    other = logging.LogRecord("psycopg.pool", logging.INFO, "", 0, "pool ready", None, None)
    assert pool_filter.filter(other)
    assert other.getMessage() == "pool ready"


def test_real_clients_of_a_dead_broker_log_one_line_and_nothing_on_stderr(
    dead_port: int,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.kafka")
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{dead_port}")
    producer = kafka_producer(settings)
    consumer = kafka_consumer(settings, "outage-test")
    admin = kafka_admin(settings)
    try:
        consumer.subscribe(["anything"])
        for _ in range(6):
            producer.poll(0.5)
            consumer.poll(0.5)
        admin.poll(0.1)
    finally:
        consumer.close()
        producer.flush(0)
    lines = [r.getMessage() for r in caplog.records if r.name == "runtime.kafka"]
    assert lines == [
        f"cannot reach Kafka at 127.0.0.1:{dead_port} (connection refused); retrying — "
        "is the stack up? `make up`"
    ]
    assert "%3|" not in capfd.readouterr().err
    assert not reporter_for("local").reachable()


def test_an_unknown_extra_property_is_a_config_error_naming_the_setting() -> None:
    settings = Settings(kafka_extra={"no.such.property": "1"})
    for build in (
        lambda: kafka_producer(settings),
        lambda: kafka_consumer(settings, "g"),
        lambda: kafka_admin(settings),
    ):
        with pytest.raises(ConfigError, match=r"no\.such\.property.*SIDESTREAM_KAFKA_EXTRA"):
            build()


@pytest.mark.parametrize(
    "schema", ["public -c statement_timeout=1", 'Bad"Schema', "a;b", "", "1abc", "x" * 64]
)
def test_schema_names_that_could_inject_options_are_refused(schema: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        check_schema(schema)
    if schema:
        with pytest.raises(ValueError, match="invalid schema name"):
            postgres_pool(Settings(), schema=schema)


def test_the_injection_never_reaches_postgres(stack_settings: Settings) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        postgres_connect(stack_settings, schema="public -c statement_timeout=1")
    with postgres_connect(stack_settings, schema="public") as conn:
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row == ("0",)
    assert check_schema("shadow_2") == "shadow_2"
    assert isinstance(conn, psycopg.Connection)
