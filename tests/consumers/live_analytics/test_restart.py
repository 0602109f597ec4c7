"""The worker stopped mid-stream (SIGTERM) and started again, or joined mid-stream by a
second worker (a rebalance): tables come back from their changelogs and the final rows in
Postgres are exact."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.live_analytics import LiveAnalyticsOptions
from runtime import Settings
from runtime.ports import free_port
from schemas import AnalyticsEvent, AuditEvent
from tests.consumers.live_analytics.conftest import LiveTopics
from tests.consumers.live_analytics.support import (
    WindowRow,
    analytics,
    at,
    audit,
    expected_windows,
    get_json,
    metric_value,
    produce,
    scrape,
    snapshot_rows,
    worker_process,
)
from tests.support.waiting import wait_for

TENANTS = tuple(f"tenant-{i}" for i in range(6))
GRACE_S = 240  # every phase below spans less event time than this: nothing is late


def _phase(minutes: range, per_minute: int) -> list[AnalyticsEvent | AuditEvent]:
    events: list[AnalyticsEvent | AuditEvent] = []
    for minute in minutes:
        for i in range(per_minute):
            tenant = TENANTS[i % len(TENANTS)]
            when = at(minute, (i * 59.0) / per_minute)
            if i % 5 == 4:
                events.append(audit(tenant, "invoice.update", when))
            else:
                events.append(analytics(tenant, "page_view", when))
    return events


def _items(topics: LiveTopics, events: list[Any]) -> list[tuple[str, Any, None]]:
    return [
        (topics.analytics if isinstance(e, AnalyticsEvent) else topics.audit, e, None)
        for e in events
    ]


def _open_rows(base: str) -> dict[WindowRow, int]:
    rows: dict[WindowRow, int] = {}
    for tenant in TENANTS:
        body = get_json(f"{base}/live/tenants/{tenant}/windows/")
        for name, seconds in (("1m", 60), ("5m", 300)):
            for window in body.get("windows", {}).get(name, []):
                start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
                for kind, count in window["counts"].items():
                    rows[(seconds, start, tenant, kind)] = count
    return rows


def _stop(process: subprocess.Popen[bytes], how: signal.Signals) -> int:
    process.send_signal(how)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_a_restart_mid_stream_recovers_the_tables_and_writes_exact_rows(
    store: str,
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
    tmp_path: Path,
) -> None:
    # Small batches: at full speed the worker counts phase B in a fraction of a second,
    # before the test could stop it mid-stream.
    options = live_options(grace_s=GRACE_S, store=store, batch_max=50)
    base = f"http://127.0.0.1:{options.web_port}"
    log = tmp_path / "worker.log"

    def counted(page: str) -> float:
        return metric_value(page, "sidestream_live_events_total")

    first, first_base = worker_process(stack_settings, options, log=log)
    metrics = f"{first_base}/metrics"
    try:
        assert wait_for(lambda: _ready(f"{first_base}/readyz"), timeout=60), log.read_text()[-3000:]
        # Phase A, minutes 0-2, all processed.
        phase_a = _phase(range(3), 60)
        produce(stack_settings, _items(live_topics, phase_a))
        assert wait_for(lambda: counted(scrape(metrics)) >= len(phase_a), timeout=60)
        # Phase B, minutes 3-5, much larger: SIGTERM while it is being processed.
        phase_b = _phase(range(3, 6), 4000)
        produce(stack_settings, _items(live_topics, phase_b))
        assert wait_for(lambda: counted(scrape(metrics)) >= len(phase_a) + 300, timeout=60)
        seen = counted(scrape(metrics))
        print(f"stopped at {seen:.0f} of {len(phase_a) + len(phase_b)}")
        assert _stop(first, signal.SIGTERM) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    assert seen < len(phase_a) + len(phase_b), "not mid-stream: make phase B larger"

    second, second_base = worker_process(stack_settings, options, log=log)
    try:
        assert wait_for(lambda: _ready(f"{second_base}/readyz"), timeout=60), log.read_text()[
            -3000:
        ]
        # The open windows come back from the changelogs and the rest of phase B is added:
        # exactly the counts of A + B (windows of minutes 0-1 may already be final).
        expected = expected_windows(phase_a + phase_b)

        def open_and_written() -> dict[WindowRow, int]:
            return {**snapshot_rows(pg_conn, live_schema), **_open_rows(base)}

        assert wait_for(lambda: open_and_written() == expected, timeout=120), _diff(
            open_and_written(), expected
        )
        # Event time moves on everywhere: every window of A + B is final, exactly.
        ticks = [analytics(tenant, "tick", at(60)) for tenant in TENANTS]
        produce(stack_settings, _items(live_topics, ticks))
        assert wait_for(lambda: snapshot_rows(pg_conn, live_schema) == expected, timeout=60), _diff(
            snapshot_rows(pg_conn, live_schema), expected
        )
        # The second worker went on from the first one's committed offsets: it did not
        # count what the first had counted before the metrics were read.
        resumed = counted(scrape(f"{second_base}/metrics"))
        assert resumed <= len(phase_a) + len(phase_b) + len(ticks) - seen
        assert _stop(second, signal.SIGTERM) == 0
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=10)


def test_a_second_worker_joining_mid_stream_takes_partitions_over_exactly(
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
    tmp_path: Path,
) -> None:
    # The revoking worker must finish the micro-batch in hand, hand its changelog records
    # to the producer and commit before the new owner restores the tables and reads on
    # from the committed offsets: a batch counted but not committed would be counted
    # twice, one committed but not in the changelog would be lost.
    options = live_options(grace_s=GRACE_S)
    joining = dataclasses.replace(options, web_port=free_port(), data_dir=tmp_path / "faust-2")
    first, first_base = worker_process(stack_settings, options, log=tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        assert wait_for(lambda: _ready(f"{first_base}/readyz"), timeout=60)
        phase_a = _phase(range(3), 60)
        produce(stack_settings, _items(live_topics, phase_a))

        def counted() -> float:
            return metric_value(scrape(f"{first_base}/metrics"), "sidestream_live_events_total")

        assert wait_for(lambda: counted() >= len(phase_a), timeout=60)
        second, second_base = worker_process(stack_settings, joining, log=tmp_path / "second.log")
        # Phase B trickles in while the second worker joins (a join takes about half the
        # session timeout on the local broker), so the rebalance comes mid-stream.
        phase_b = _phase(range(3, 6), 4000)
        chunk = len(phase_b) // 20
        for start in range(0, len(phase_b), chunk):
            produce(stack_settings, _items(live_topics, phase_b[start : start + chunk]))
            time.sleep(0.5)
        assert wait_for(
            lambda: _ready(f"{second_base}/readyz") and _ready(f"{first_base}/readyz"),
            timeout=90,
        ), (tmp_path / "second.log").read_text()[-3000:]
        bases = (f"http://127.0.0.1:{options.web_port}", f"http://127.0.0.1:{joining.web_port}")
        expected = expected_windows(phase_a + phase_b)

        def open_and_written() -> dict[WindowRow, int]:
            rows = snapshot_rows(pg_conn, live_schema)
            for base in bases:
                rows.update(_open_rows(base))
            return rows

        assert wait_for(lambda: open_and_written() == expected, timeout=120), _diff(
            open_and_written(), expected
        )
        ticks = [analytics(tenant, "tick", at(60)) for tenant in TENANTS]
        produce(stack_settings, _items(live_topics, ticks))
        assert wait_for(lambda: snapshot_rows(pg_conn, live_schema) == expected, timeout=60), _diff(
            snapshot_rows(pg_conn, live_schema), expected
        )
        assert _stop(second, signal.SIGTERM) == 0
        assert _stop(first, signal.SIGTERM) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _ready(url: str) -> bool:
    return scrape(url).startswith("ready")


def _diff(got: dict[WindowRow, int], expected: dict[WindowRow, int]) -> list[str]:
    keys = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
    return [f"{k}: got {got.get(k)}, expected {expected.get(k)}" for k in keys[:20]]
