"""Fixtures for the live analytics tests: topics, a migrated schema, worker options with
fresh names, and cleanup of what faust creates (changelog and assignor topics)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka.admin import AdminClient

from consumers import CONSUMER_MIGRATIONS
from consumers.live_analytics import EmbeddedLiveAnalytics, LiveAnalyticsOptions, internal_topics
from runtime import Settings
from runtime.migrations import migrate
from runtime.ports import free_port
from tests.support.workers import StartedWorkers


@dataclass(frozen=True)
class LiveTopics:
    analytics: str
    audit: str
    alerts: str


@pytest.fixture
def live_topics(make_topic: Callable[..., str]) -> LiveTopics:
    return LiveTopics(
        analytics=make_topic("live_analytics", partitions=3),
        audit=make_topic("live_audit", partitions=3),
        alerts=make_topic("live_alerts", partitions=1),
    )


@pytest.fixture
def live_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    migrate(pg_conn, [CONSUMER_MIGRATIONS], schema=pg_schema)
    return pg_schema


@pytest.fixture
def live_options(
    admin: AdminClient,
    unique: Callable[[str], str],
    live_topics: LiveTopics,
    live_schema: str,
    tmp_path: Path,
) -> Iterator[Callable[..., LiveAnalyticsOptions]]:
    """Options with a fresh app id and web port; faust's topics are deleted afterwards."""
    made: list[LiveAnalyticsOptions] = []

    def make(**overrides: Any) -> LiveAnalyticsOptions:
        fields: dict[str, Any] = {
            "app_id": unique("live_app"),
            "topics": (live_topics.analytics, live_topics.audit),
            "alerts_topic": live_topics.alerts,
            "schema": live_schema,
            # faust refuses port 0 (its web_port setting starts at 1), so its web server
            # cannot report a port it chose: this one is picked free (a small race left).
            "web_port": free_port(),
            "standby_replicas": 0,
            "data_dir": tmp_path / "faust",
        }
        fields.update(overrides)
        options = LiveAnalyticsOptions(**fields)
        made.append(options)
        return options

    yield make
    names = sorted({name for options in made for name in internal_topics(options.app_id)})
    if names:
        for future in admin.delete_topics(names, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)


@pytest.fixture
def start_live() -> Iterator[Callable[[Settings, LiveAnalyticsOptions], EmbeddedLiveAnalytics]]:
    """Start workers on threads; all are stopped after the test."""
    started: StartedWorkers[EmbeddedLiveAnalytics] = StartedWorkers()

    def start(settings: Settings, options: LiveAnalyticsOptions) -> EmbeddedLiveAnalytics:
        worker = started.add(EmbeddedLiveAnalytics(settings, options).start())
        assert worker.wait_ready(60), "the live analytics worker did not become ready"
        return worker

    yield start
    started.stop_all(timeout=60, tolerate_errors=True)
