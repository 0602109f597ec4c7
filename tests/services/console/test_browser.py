"""The console in a real browser (Playwright driving Debian's Chromium, headless) against
the real local stack: every page renders real data, a dead letter is redriven from the
UI after its cause is fixed and lands once, a replay dry run in the UI matches
``sidestream replay --dry-run``, and a read-only user cannot act. Each page is saved as
a screenshot under ``.artifacts/console/``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from consumers.embedded import EmbeddedWorker
from runtime import ObservabilityServer
from runtime.clients import postgres_connect
from runtime.observability import write_target_file
from tests.consumers.support import count_rows
from tests.services.console.browser import screenshot_path, served
from tests.services.console.conftest import (
    OPERATOR_KEY,
    READER_KEY,
    ConsoleEnv,
    fill_dead_letter_topic,
    gated_console,
)
from tests.services.console.test_analytics import bench_results, live_windows, spike
from tests.services.console.test_dead_letters import make_dead_letters
from tests.services.console.test_deliveries import failed_notifications
from tests.services.console.test_replay import cli_dry_run, landed_history
from tests.support.waiting import wait_for

pytestmark = pytest.mark.browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=key]", key)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{url}/pipelines")


def test_every_page_renders_real_data_and_a_fixed_dead_letter_is_redriven_once(
    console_env: ConsoleEnv,
    console_url: str,
    page: Any,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    env, url = console_env, console_url
    worker: EmbeddedWorker = make_dead_letters(env, worker_threads, pg_conn)
    assert env.config.targets_dir is not None
    with ObservabilityServer(host="127.0.0.1", port=0, registry=worker.registry) as server:
        write_target_file(env.config.targets_dir, "audit", f"127.0.0.1:{server.port}")
        sign_in(page, url, OPERATOR_KEY)
        row = page.locator("tr[data-pipeline=audit]")
        assert env.group in row.inner_text()
        assert "ready" in row.inner_text()
        assert f"127.0.0.1:{server.port}" in row.inner_text()
        page.screenshot(path=screenshot_path("pipelines"), full_page=True)
        # The table refreshes itself (console.js swaps in /pipelines/table every 5 s).
        page.wait_for_selector("#pipelines[data-refreshed]", timeout=20_000)
        assert env.group in page.locator("tr[data-pipeline=audit]").inner_text()

    page.click("nav >> text=Dead letters")
    overview = page.locator(f"tr[data-dlq='{env.dlq}'][data-class=CheckViolation]")
    assert "3" in overview.inner_text()
    page.screenshot(path=screenshot_path("dead-letters"), full_page=True)

    page.click(f"a[href='/dead-letters/{env.dlq}'] >> nth=0")
    page.locator("tr[data-class=CheckViolation] input[type=checkbox]").check()
    page.click("text=Preview redrive (dry run)")
    assert "would redrive 3" in page.locator("[data-testid=preview-summary]").inner_text()
    page.screenshot(path=screenshot_path("dead-letters-preview"), full_page=True)

    # Open one letter: its value decoded, its headers, its source.
    letter_link = page.locator("tr.detail a").first
    letter_href = letter_link.get_attribute("href")
    assert letter_href is not None

    # The cause is fixed; confirm the redrive (accepting the browser's confirm dialog).
    pg_conn.execute(
        f'ALTER TABLE "{env.schema}".audit_events DROP CONSTRAINT audit_events_action_check'
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Confirm redrive of 3 records")
    page.wait_for_selector("text=redrove 3")
    assert wait_for(lambda: count_rows(pg_conn, env.schema, "audit_events") == 63, timeout=60)
    assert page.locator("[data-testid=ledger] tbody tr").count() == 3
    page.screenshot(path=screenshot_path("dead-letters-redriven"), full_page=True)
    time.sleep(2)  # a second copy would have landed by now
    assert count_rows(pg_conn, env.schema, "audit_events") == 63

    page.goto(f"{url}{letter_href}")
    decoded = page.locator("[data-testid=decoded]")
    assert "AuditEvent" in decoded.inner_text()
    page.screenshot(path=screenshot_path("dead-letter"), full_page=True)

    page.click("nav >> text=Schemas")
    usage = page.locator("tr[data-subject=audit_event]").inner_text()
    assert "audit_event v1: 66" in usage  # 60 good, 3 rejected, their 3 redriven copies
    assert "undecodable: 1" in usage
    page.screenshot(path=screenshot_path("schemas"), full_page=True)
    page.click("a[href='/schemas/analytics_event']")
    added = page.locator("[data-testid=diff] .diff_add").all_inner_texts()
    assert any("platform" in chunk for chunk in added)
    page.screenshot(path=screenshot_path("schema-diff"), full_page=True)


def test_a_replay_dry_run_in_the_ui_matches_the_cli(
    console_env: ConsoleEnv,
    console_url: str,
    page: Any,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    env, url = console_env, console_url
    since = landed_history(env, worker_threads, pg_conn).isoformat()
    sign_in(page, url, OPERATOR_KEY)
    page.click("nav >> text=Replay")
    page.select_option("select[name=sink]", "audit")
    page.check("input[name=start][value=time]")
    page.fill("input[name=from_time]", since)
    page.click("text=Show the plan (dry run)")
    rows = page.locator("[data-testid=plan] tbody tr")
    shown = {}
    for index in range(rows.count()):
        cells = [c.replace(",", "") for c in rows.nth(index).locator("td").all_inner_texts()]
        shown[int(cells[0])] = (int(cells[3]), int(cells[6]))
    assert shown == cli_dry_run(env, "--from-time", since)
    page.screenshot(path=screenshot_path("replay-plan"), full_page=True)

    page.fill("input[name=rate]", "500")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Run this replay")
    page.wait_for_selector("[data-testid=job-state]:text('completed')", timeout=120_000)
    assert page.locator("[data-testid=job-done]").inner_text() == "30"
    page.screenshot(path=screenshot_path("replay-run"), full_page=True)
    assert count_rows(pg_conn, env.schema, "audit_events") == 60


def test_a_read_only_user_sees_everything_and_cannot_act(
    console_env: ConsoleEnv, console_url: str, page: Any, pg_conn: psycopg.Connection[Any]
) -> None:
    url = console_url
    live_windows(pg_conn, console_env.schema)
    spike(console_env)
    assert console_env.config.bench_dir is not None
    bench_results(console_env.config.bench_dir)
    with postgres_connect(console_env.settings, schema=console_env.schema, autocommit=True) as db:
        failed_notifications(db)
    sign_in(page, url, READER_KEY)
    assert page.locator("[data-testid=role]").inner_text() == "read-only"
    page.click("nav >> text=Deliveries")
    assert page.locator("[data-testid=circuit]").inner_text() == "open"
    assert page.locator("text=Retry the selected failed notifications").is_disabled()
    page.screenshot(path=screenshot_path("deliveries"), full_page=True)
    page.click("nav >> text=Analytics")
    assert page.locator("[data-tenant=acme] polyline").count() == 2
    assert "rate_spike" in page.locator("[data-testid=alerts]").inner_text()
    page.screenshot(path=screenshot_path("analytics"), full_page=True)
    page.click("nav >> text=Bench")
    assert "3 runs" in page.locator("[data-figure='audit sink rows/s']").inner_text()
    page.screenshot(path=screenshot_path("bench"), full_page=True)
    page.goto(f"{url}/dead-letters/{console_env.dlq}")
    page.goto(f"{url}/replay?sink=audit&start=beginning")
    run = page.locator("text=Run this replay")
    assert run.is_disabled()
    page.screenshot(path=screenshot_path("read-only"), full_page=True)
    # Forging the action from the page (with the session's own CSRF token) is refused too.
    status = page.evaluate(
        """async () => {
            const form = new URLSearchParams({
                csrf: document.querySelector("input[name=csrf]").value,
                sink: "audit", start: "beginning"});
            const r = await fetch("/replay/run", {method: "POST", body: form,
                headers: {"Content-Type": "application/x-www-form-urlencoded"}});
            return r.status;
        }"""
    )
    assert status == 403


def test_a_topic_still_being_indexed_refreshes_itself_until_complete(
    console_env: ConsoleEnv, page: Any
) -> None:
    """The first view of a topic the index is still reading shows how far it got, no
    redrive form, and swaps in the fresh table every second until the index completes;
    then it stops refreshing and offers the redrive."""
    env = console_env
    fill_dead_letter_topic(env.settings, env.topic, env.dlq, 2000, int(time.time() * 1000))
    gate = threading.Event()
    app, publisher = gated_console(env, gate, after=500)
    try:
        with served(app) as url:
            sign_in(page, url, OPERATOR_KEY)
            page.goto(f"{url}/dead-letters/{env.dlq}")
            page.wait_for_selector("#dlq-classes[data-refreshed] >> text=indexing: 500 of ~2,000")
            assert page.locator("text=Preview redrive (dry run)").count() == 0
            assert "≥ 125" in page.locator("tr[data-class=CheckViolation]").inner_text()
            page.screenshot(path=screenshot_path("dead-letters-indexing"), full_page=True)
            gate.set()
            page.wait_for_selector("#dlq-classes[data-refresh-done]")
            row = page.locator("tr[data-class=CheckViolation]")
            assert "500" in row.inner_text()
            assert "≥" not in row.inner_text()
            assert row.locator("input[type=checkbox]").count() == 1
            assert page.locator("text=Preview redrive (dry run)").count() == 1
    finally:
        gate.set()
        publisher.close(10)
