"""Live windows end to end: real broker → faust worker → tables, web views, Postgres."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumers.live_analytics import (
    HOPPING_5M,
    TUMBLING_1M,
    EmbeddedLiveAnalytics,
    LiveAnalyticsOptions,
    SpikeRule,
)
from runtime import Settings
from schemas import (
    AnalyticsAlert,
    AnalyticsEvent,
    AuditEvent,
    EventDeserializer,
    NotificationChannel,
    NotificationRequested,
)
from tests.consumers.live_analytics.conftest import LiveTopics
from tests.consumers.live_analytics.support import (
    WindowRow,
    action_counts,
    analytics,
    at,
    audit,
    expected_windows,
    get_json,
    produce,
    scrape,
    snapshot_rows,
)
from tests.consumers.support import read_all
from tests.support.waiting import wait_for

StartLive = Callable[[Settings, LiveAnalyticsOptions], EmbeddedLiveAnalytics]
TENANTS = ("acme", "globex", "initech", "umbrella")
# Large enough that no event of a test stream is late however the two source topics
# interleave; windows then close only when the test moves event time on.
GRACE_S = 1800


def _stream() -> list[AnalyticsEvent | AuditEvent]:
    """Seven minutes of mixed events with a different shape per tenant."""
    events: list[AnalyticsEvent | AuditEvent] = []
    names = ("page_view", "page_view", "click", "signup")
    for t, tenant in enumerate(TENANTS):
        for minute in range(7):
            for i in range(1 + (minute + t) % 4):
                events.append(analytics(tenant, names[(i + t) % 4], at(minute, 7 * i + t)))
            if (minute + t) % 2 == 0:
                events.append(audit(tenant, "invoice.update", at(minute, 50)))
    return events


def _items(topics: LiveTopics, events: list[Any]) -> list[tuple[str, Any, None]]:
    return [
        (topics.analytics if isinstance(e, AnalyticsEvent) else topics.audit, e, None)
        for e in events
    ]


def _as_rows(
    tenant: str, spec_seconds: int, windows: dict[float, dict[str, int]]
) -> dict[WindowRow, int]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return {
        (spec_seconds, epoch + timedelta(seconds=start), tenant, kind): count
        for start, counts in windows.items()
        for kind, count in counts.items()
    }


def _view_rows(body: dict[str, Any]) -> dict[WindowRow, int]:
    rows: dict[WindowRow, int] = {}
    for name, seconds in (("1m", 60), ("5m", 300)):
        for window in body["windows"][name]:
            start = datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
            for kind, count in window["counts"].items():
                rows[(seconds, start, body["tenant"], kind)] = count
    return rows


def test_window_counts_agree_in_the_table_the_web_view_and_postgres(
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    start_live: StartLive,
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
) -> None:
    options = live_options(grace_s=GRACE_S, top_n=2)
    worker = start_live(stack_settings, options)
    events = _stream()
    produce(stack_settings, _items(live_topics, events))
    assert wait_for(
        lambda: (
            worker.metric("sidestream_live_events_total", topic=live_topics.analytics)
            + worker.metric("sidestream_live_events_total", topic=live_topics.audit)
            >= len(events)
        ),
        timeout=60,
    )
    expected = expected_windows(events)
    live = worker.live
    assert live is not None
    base = f"http://127.0.0.1:{options.web_port}"

    # 1. Every window is still open: the tables and the web view hold the expected counts.
    in_tables: dict[WindowRow, int] = {}
    in_view: dict[WindowRow, int] = {}
    for tenant in TENANTS:
        for spec in (TUMBLING_1M, HOPPING_5M):
            windows = worker.call(functools.partial(live.tables.windows_of, spec, tenant))
            in_tables.update(_as_rows(tenant, spec.size_s, windows))
        in_view.update(_view_rows(get_json(f"{base}/live/tenants/{tenant}/windows/")))
    assert in_tables == expected
    assert in_view == expected

    # 2. The current windows and the top actions follow the partition's stream time.
    listed = get_json(f"{base}/live/tenants/")["tenants"]
    assert sorted(entry["tenant"] for entry in listed) == sorted(TENANTS)
    partition_of = {entry["tenant"]: entry["partition"] for entry in listed}
    for tenant in TENANTS:
        sharing = {t for t, p in partition_of.items() if p == partition_of[tenant]}
        latest = max(e.occurred_at for e in events if e.tenant_id in sharing)
        minute = latest.replace(second=0)
        body = get_json(f"{base}/live/tenants/{tenant}/")
        assert body["stream_time"] == latest.isoformat().replace("+00:00", "Z")
        current = body["current"]["1m"]
        assert current["start"] == minute.isoformat().replace("+00:00", "Z")
        expected_now = {
            k: v for (s, st, t, k), v in expected.items() if (s, st, t) == (60, minute, tenant)
        }
        assert current["counts"] == expected_now
        five = body["current"]["5m"]
        five_start = minute - timedelta(minutes=4)
        assert five["start"] == five_start.isoformat().replace("+00:00", "Z")
        assert five["counts"] == {
            k: v for (s, st, t, k), v in expected.items() if (s, st, t) == (300, five_start, tenant)
        }
        actions = action_counts(events, tenant, minute)
        top = sorted(actions.items(), key=lambda item: (-item[1], item[0]))[:2]
        assert body["top_actions"] == [{"action": a, "count": c} for a, c in top]
        top_one = get_json(f"{base}/live/tenants/{tenant}/top/?n=1")["top"]
        assert top_one == [{"action": a, "count": c} for a, c in top[:1]]
    assert get_json(f"{base}/live/tenants/nobody/")["status"] == 404
    assert get_json(f"{base}/live/tenants/acme/top/?n=0")["status"] == 400
    assert snapshot_rows(pg_conn, live_schema) == {}  # nothing is final yet

    # 3. Event time moves on (one event per tenant, so on every partition): every window
    #    of the stream is final, written to Postgres, and gone from the tables.
    ticks = [analytics(tenant, "tick", at(60)) for tenant in TENANTS]
    produce(stack_settings, _items(live_topics, ticks))
    assert wait_for(lambda: snapshot_rows(pg_conn, live_schema) == expected, timeout=60), (
        snapshot_rows(pg_conn, live_schema),
        expected,
    )
    after = get_json(f"{base}/live/tenants/acme/windows/")
    assert [w["start"] for w in after["windows"]["1m"]] == ["2024-05-01T13:00:00Z"]
    assert worker.metric("sidestream_live_snapshot_rows_total") == len(expected)

    # 4. Late, undecodable, foreign and wrongly keyed records are counted and skipped.
    notification = NotificationRequested.new(
        tenant_id="acme",
        producer="tests",
        notification_id="0b6f7f5e-3f0e-4a53-9d53-6d1d9b1f6c0e",
        channel=NotificationChannel.EMAIL,
        recipient="a@example.com",
        template="t",
    )
    produce(
        stack_settings,
        [
            (live_topics.analytics, analytics("acme", "page_view", at(3)), None),
            (live_topics.analytics, b"\x00garbage", b"acme"),
            (live_topics.analytics, notification, None),
            (live_topics.audit, audit("acme", "invoice.update", at(60, 5)), b"not-the-tenant"),
        ],
    )

    def skipped_once(reason: str) -> bool:
        return worker.metric("sidestream_live_events_skipped_total", reason=reason) == 1

    for reason in ("late", "undecodable", "unsupported_event", "not_keyed_by_tenant"):
        assert wait_for(functools.partial(skipped_once, reason), timeout=30), reason
    assert snapshot_rows(pg_conn, live_schema) == expected

    # 5. faust's metrics and ours, in the injected registry, on faust's /metrics too.
    page = scrape(f"{base}/metrics")
    assert "faust_messages_received_total" in page
    assert "sidestream_live_windows_closed_total" in page


def test_a_spike_emits_exactly_the_expected_alert(
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    start_live: StartLive,
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
) -> None:
    rule = SpikeRule(factor=3.0, min_events=20, baseline_windows=15)
    options = live_options(grace_s=GRACE_S, spike=rule)
    worker = start_live(stack_settings, options)
    events: list[AnalyticsEvent | AuditEvent] = []
    for minute in range(17):
        # "spiky": 4 a minute, then 40 in minute 15 (> 3 x 4): the one alert.
        # "busy": 4 a minute, then 12 in minute 15 (not > 3 x 4): no alert.
        # "quiet": nothing, then 15 in minute 16: above 3 x 0 but below min_events.
        spiky = 40 if minute == 15 else 4
        busy = 12 if minute == 15 else 4
        quiet = 15 if minute == 16 else 0
        for tenant, count in (("spiky", spiky), ("busy", busy), ("quiet", quiet)):
            for i in range(count):
                when = at(minute, i * 59 / max(count, 1))
                if i % 4 == 3:
                    events.append(audit(tenant, "invoice.update", when))
                else:
                    events.append(analytics(tenant, "page_view", when))
    ticks = [analytics(tenant, "tick", at(120)) for tenant in ("spiky", "busy", "quiet")]
    produce(stack_settings, _items(live_topics, events))
    assert wait_for(
        lambda: (
            worker.metric("sidestream_live_events_total", topic=live_topics.analytics)
            + worker.metric("sidestream_live_events_total", topic=live_topics.audit)
            >= len(events)
        ),
        timeout=60,
    )
    produce(stack_settings, _items(live_topics, ticks))
    expected = expected_windows(events)
    assert wait_for(lambda: snapshot_rows(pg_conn, live_schema) == expected, timeout=60)
    # Everything closed at once, oldest minute first, so the result does not depend on how
    # the two source topics interleaved.
    messages = read_all(stack_settings, live_topics.alerts, expect=2, timeout=10)
    alerts = [
        EventDeserializer().deserialize(m.value() or b"", live_topics.alerts) for m in messages
    ]
    assert len(alerts) == 1, alerts
    alert = alerts[0]
    assert isinstance(alert, AnalyticsAlert)
    assert messages[0].key() == b"spiky"
    assert (alert.tenant_id, alert.rule, alert.observed_count) == ("spiky", "rate_spike", 40)
    assert alert.window_start == at(15)
    assert alert.occurred_at == at(16)
    assert alert.baseline_mean == 4.0
    assert alert.threshold_factor == 3.0
    assert worker.metric("sidestream_live_alerts_total", rule="rate_spike") == 1


def test_a_backlog_of_both_topics_is_counted_without_late_events(
    stack_settings: Settings,
    live_topics: LiveTopics,
    live_options: Callable[..., LiveAnalyticsOptions],
    start_live: StartLive,
    pg_conn: psycopg.Connection[Any],
    live_schema: str,
) -> None:
    # Ten minutes of backlog, dense on the analytics topic and sparse on the audit topic:
    # read side by side, the audit topic runs minutes ahead in event time. No grace at all:
    # only the watermark (the slower topic still being read) keeps its events from being
    # late.
    events: list[AnalyticsEvent | AuditEvent] = []
    for minute in range(10):
        for tenant in TENANTS[:3]:
            events += [analytics(tenant, "page_view", at(minute, s * 2)) for s in range(30)]
            events += [audit(tenant, "invoice.update", at(minute, s * 30)) for s in range(2)]
    produce(stack_settings, _items(live_topics, events))
    worker = start_live(stack_settings, live_options(grace_s=0))
    assert wait_for(
        lambda: (
            worker.metric("sidestream_live_events_total", topic=live_topics.analytics)
            + worker.metric("sidestream_live_events_total", topic=live_topics.audit)
            + worker.metric("sidestream_live_events_skipped_total", reason="late")
            >= len(events)
        ),
        timeout=90,
    )
    assert worker.metric("sidestream_live_events_skipped_total", reason="late") == 0
    ticks = [analytics(tenant, "tick", at(60)) for tenant in TENANTS[:3]]
    produce(stack_settings, _items(live_topics, ticks))
    expected = expected_windows(events)
    assert wait_for(lambda: snapshot_rows(pg_conn, live_schema) == expected, timeout=60)
