"""The Analytics and Bench pages: per-tenant window counts and alerts as charts, and each
bench figure as a series over the runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from schemas import AnalyticsAlert
from tests.consumers.support import produce
from tests.services.console.conftest import ConsoleEnv


def live_windows(pg_conn: psycopg.Connection[Any], schema: str) -> None:
    """Ten minutes of one-minute windows for two tenants."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    rows = [
        (60, start + timedelta(minutes=m), start + timedelta(minutes=m + 1), tenant, kind, n)
        for m in range(10)
        for tenant, kind, n in (
            ("acme", "analytics_event", 100 + m * 10),
            ("acme", "audit_event", 5),
            ("globex", "analytics_event", 20),
        )
    ]
    with pg_conn.cursor() as cur:
        cur.executemany(
            f'INSERT INTO "{schema}".live_window_counts (window_seconds, window_start,'
            " window_end, tenant_id, event_type, events) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


def spike(env: ConsoleEnv) -> None:
    alert = AnalyticsAlert.new(
        tenant_id="acme",
        producer="tests",
        rule="rate_spike",
        window_start=datetime.now(UTC) - timedelta(minutes=1),
        window_seconds=60,
        observed_count=190,
        baseline_mean=40.0,
        baseline_windows=15,
        threshold_factor=3.0,
    )
    assert env.config.alerts_topic is not None
    produce(env.settings, env.config.alerts_topic, [alert])


def bench_results(directory: Path) -> None:
    """Three full runs (the sink figure drops in the last) and one quick run."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, (stamp, rows_per_s, quick) in enumerate(
        [
            ("20261120T100000Z", 12000.0, False),
            ("20261121T100000Z", 12500.0, False),
            ("20261122T100000Z", 6000.0, False),
            ("20261122T110000Z", 99.0, True),
        ]
    ):
        figures = [
            {
                "section": "sink",
                "name": "audit sink rows/s",
                "value": rows_per_s,
                "unit": "rows/s",
                "target": ">= 0.8 ratio",
                "passed": index < 2,
            },
            {"section": "publish", "name": "publish() median", "value": 6.5, "unit": "µs"},
        ]
        run = {"time": stamp, "quick": quick, "machine": {}, "figures": figures}
        (directory / f"{stamp}.json").write_text(json.dumps(run))
    (directory / "broken.json").write_text("{not json")


def test_live_windows_and_alerts_as_charts(
    console_env: ConsoleEnv, reader: TestClient, pg_conn: psycopg.Connection[Any]
) -> None:
    live_windows(pg_conn, console_env.schema)
    spike(console_env)
    page = reader.get("/analytics")
    assert page.status_code == 200
    acme = re.search(r'data-tenant="acme">(.*?)</div>', page.text, re.S)
    assert acme is not None
    assert acme.group(1).count("<polyline") == 2  # analytics and audit events
    assert "analytics_event: 190" in acme.group(1)  # the last window's count
    assert 'data-tenant="globex"' in page.text
    alerts = re.search(r'data-testid="alerts">(.*?)</table>', page.text, re.S)
    assert alerts is not None
    assert "rate_spike" in alerts.group(1)
    assert "190" in alerts.group(1)


def test_bench_history_shows_each_figure_over_the_runs(
    console_env: ConsoleEnv, reader: TestClient
) -> None:
    assert console_env.config.bench_dir is not None
    bench_results(console_env.config.bench_dir)
    page = reader.get("/bench")
    sink = re.search(r'data-figure="audit sink rows/s">(.*?)</small>', page.text, re.S)
    assert sink is not None
    assert "3 runs" in sink.group(1)  # the quick run is left out
    assert "miss" in sink.group(1)
    assert "latest/previous 0.48" in sink.group(1)
    with_quick = reader.get("/bench", params={"quick": "true"})
    assert "4 runs" in with_quick.text
