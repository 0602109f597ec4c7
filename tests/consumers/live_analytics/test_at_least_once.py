"""What at least once means for the live counts: a crash makes them count events twice,
while ``analytics_hourly`` (the analytics sink, exactly once) stays exact."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers import WorkerOptions
from consumers.embedded import EmbeddedWorker
from consumers.live_analytics import LiveAnalyticsOptions, internal_topics
from runtime import Settings
from tests.consumers.live_analytics.conftest import LiveTopics
from tests.consumers.live_analytics.support import (
    T0,
    analytics,
    at,
    metric_value,
    produce,
    scrape,
    snapshot_rows,
    worker_process,
)
from tests.consumers.support import read_all
from tests.support.waiting import wait_for

TENANTS = ("acme", "globex", "initech")


def _changelog_total(settings: Settings, changelog: str) -> int:
    """The sum of the latest value of every key in a counts changelog."""
    latest: dict[bytes, int] = {}
    # Everything there is: read for a while (a fresh group's join takes a few seconds).
    for message in read_all(settings, changelog, expect=1_000_000, timeout=10):
        key, value = message.key(), message.value()
        if key is not None:
            latest[key] = 0 if value is None else int(json.loads(value))
    return sum(latest.values())


def _hourly(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    query = sql.SQL("SELECT tenant_id, sum(events) FROM {} WHERE hour = %s GROUP BY 1").format(
        sql.Identifier(schema, "analytics_hourly")
    )
    return {tenant: int(events) for tenant, events in conn.execute(query, (T0,))}


@pytest.mark.chaos
def test_a_crash_over_counts_live_windows_but_not_the_hourly_rollup(
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    worker_threads: Callable[[Settings, WorkerOptions], EmbeddedWorker],
    unique: Callable[[str], str],
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
    tmp_path: Path,
) -> None:
    # The exact path: the analytics sink on the same topic, into the same schema.
    worker_threads(
        stack_settings,
        WorkerOptions(
            sink="analytics",
            group_id=unique("sink"),
            topics=(live_topics.analytics,),
            schema=live_schema,
        ),
    )
    # No commit before the crash: the replay after it covers every event.
    options = live_options(grace_s=600, commit_interval_s=3600)
    log = tmp_path / "worker.log"
    first, base = worker_process(stack_settings, options, log=log)
    events = [analytics(TENANTS[i % 3], "page_view", at(i % 3, i % 60)) for i in range(300)]
    try:
        assert wait_for(lambda: scrape(f"{base}/readyz").startswith("ready"), timeout=60)
        produce(stack_settings, [(live_topics.analytics, e, None) for e in events])
        assert wait_for(
            lambda: (
                metric_value(scrape(f"{base}/metrics"), "sidestream_live_events_total")
                >= len(events)
            ),
            timeout=60,
        )
        # Every increment is in the changelog (the latest count of each one-minute window,
        # written once per micro-batch, adds up to every event)...
        changelog = internal_topics(options.app_id)[0]
        assert changelog.endswith("-counts-1m-changelog")
        assert wait_for(
            lambda: _changelog_total(stack_settings, changelog) == len(events), timeout=45
        )
        # ...and the process dies before committing its offsets.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)

    second, base = worker_process(stack_settings, options, log=log)
    try:
        assert wait_for(lambda: scrape(f"{base}/readyz").startswith("ready"), timeout=90)
        # Restored from the changelog, then every event read again. Bounded, not timed:
        # the killed member's session must expire before the group hands its partitions
        # on, which takes longer on a loaded machine.
        assert wait_for(
            lambda: (
                metric_value(scrape(f"{base}/metrics"), "sidestream_live_events_total")
                >= len(events)
            ),
            timeout=120,
        )
        produce(
            stack_settings,
            [(live_topics.analytics, analytics(t, "tick", at(60)), None) for t in TENANTS],
        )
        exact = Counter(e.tenant_id for e in events)

        def live_totals() -> dict[str, int]:
            totals: Counter[str] = Counter()
            for (seconds, start, tenant, _), count in snapshot_rows(pg_conn, live_schema).items():
                if seconds == 60 and start.hour == T0.hour:
                    totals[tenant] += count
            return dict(totals)

        assert wait_for(
            lambda: live_totals() == {t: 2 * n for t, n in exact.items()}, timeout=60
        ), (
            live_totals(),
            exact,
        )
        assert wait_for(lambda: _hourly(pg_conn, live_schema) == dict(exact), timeout=60), (
            _hourly(pg_conn, live_schema),
            exact,
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=10)
