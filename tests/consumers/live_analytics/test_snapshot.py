"""Final window counts in Postgres: absolute values, overwritten on a second write."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from consumers.live_analytics import SnapshotWriteError, SnapshotWriter, WindowCount
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from runtime import Settings
from runtime.clients import postgres_pool
from runtime.retry import Backoff
from tests.consumers.live_analytics.support import T0, snapshot_rows

NOON = T0.timestamp()


def test_a_window_written_again_is_overwritten_not_added(
    stack_settings: Settings, pg_conn: psycopg.Connection[Any], live_schema: str
) -> None:
    registry = CollectorRegistry()
    pool = postgres_pool(stack_settings, schema=live_schema, max_size=1)
    writer = SnapshotWriter(pool=pool, metrics=LiveAnalyticsMetrics(registry))
    stop = threading.Event()
    try:
        writer.write(
            [
                WindowCount(60, NOON, "acme", "analytics_event", 7),
                WindowCount(300, NOON - 240, "acme", "analytics_event", 9),
                WindowCount(60, NOON, "acme", "audit_event", 2),
            ],
            stop=stop,
        )
        # A replay (or a restart) writes the same window again, here with a higher count.
        writer.write([WindowCount(60, NOON, "acme", "analytics_event", 8)], stop=stop)
        writer.write([], stop=stop)  # nothing to write: no statement, no error
    finally:
        pool.close()
    assert snapshot_rows(pg_conn, live_schema) == {
        (60, T0, "acme", "analytics_event"): 8,
        (300, T0.replace(minute=56, hour=11), "acme", "analytics_event"): 9,
        (60, T0, "acme", "audit_event"): 2,
    }
    ends = pg_conn.execute(
        f'SELECT DISTINCT window_end - window_start FROM "{live_schema}".live_window_counts '
        "ORDER BY 1"
    ).fetchall()
    assert [row[0].total_seconds() for row in ends] == [60, 300]
    assert registry.get_sample_value("sidestream_live_snapshot_rows_total") == 4


def test_an_unreachable_database_is_retried_until_the_worker_stops(
    stack_settings: Settings, nowhere_port: int
) -> None:
    nowhere = stack_settings.with_overrides(
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{nowhere_port}/sidestream"
    )
    registry = CollectorRegistry()
    pool = postgres_pool(nowhere, max_size=1, timeout=0.5)
    writer = SnapshotWriter(
        pool=pool,
        metrics=LiveAnalyticsMetrics(registry),
        backoff=Backoff(base_s=0.05, cap_s=0.1),
        retry_deadline_s=0.5,
    )
    stop = threading.Event()
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    try:
        with pytest.raises(SnapshotWriteError) as raised:
            writer.write([WindowCount(60, NOON, "acme", "analytics_event", 1)], stop=stop)
    finally:
        timer.cancel()
        pool.close()
    assert raised.value.rows == 1
    assert (registry.get_sample_value("sidestream_live_snapshot_retries_total") or 0) >= 2
    assert not writer.ready  # failing for longer than the deadline: /readyz says so


def test_a_worker_with_nothing_to_write_still_notices_the_database_is_away(
    stack_settings: Settings, nowhere_port: int
) -> None:
    nowhere = stack_settings.with_overrides(
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{nowhere_port}/sidestream"
    )
    pools = [postgres_pool(nowhere, max_size=1, timeout=0.5), postgres_pool(stack_settings)]
    away, there = (
        SnapshotWriter(pool=pool, metrics=LiveAnalyticsMetrics(CollectorRegistry()),
                       retry_deadline_s=0.01)
        for pool in pools
    )  # fmt: skip
    try:
        assert not away.check(timeout_s=0.5)
        assert not away.check(timeout_s=0.5)  # failing since the first check, > 0.01 s
        assert there.check()
    finally:
        for pool in pools:
            pool.close()
    assert not away.ready  # what /readyz says, with no window written
    assert there.ready
