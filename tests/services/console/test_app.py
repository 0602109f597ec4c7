"""The console app against the real stack: sign-in, roles, CSRF, the pipelines page."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from consumers.embedded import EmbeddedWorker
from runtime import ObservabilityServer
from runtime.observability import write_target_file
from schemas import Event
from services.console import AuditTrail, Principal, StaticKeyVerifier, create_app
from tests.consumers.support import count_rows, produce
from tests.services.console.conftest import (
    NOBODY_KEY,
    OPERATOR_KEY,
    ConsoleEnv,
    csrf_of,
)
from tests.support.events import audit_event
from tests.support.waiting import wait_for


def test_sign_in_refuses_unknown_keys_and_keys_without_a_console_scope(
    console_env: ConsoleEnv,
) -> None:
    with TestClient(console_env.app) as client:
        assert client.get("/pipelines", follow_redirects=False).headers["location"] == "/login"
        wrong = client.post("/login", data={"key": "nope"})
        assert wrong.status_code == 401
        assert "unknown or revoked key" in wrong.text
        notify = client.post("/login", data={"key": NOBODY_KEY})
        assert notify.status_code == 401
        assert "neither the read nor the admin scope" in notify.text
        # A key in the URL is ignored unless the app allows sign-in links (local only).
        linked = client.get(f"/login?key={OPERATOR_KEY}", follow_redirects=False)
        assert linked.status_code == 200
        assert "Sign in" in linked.text
        ok = client.post("/login", data={"key": OPERATOR_KEY}, follow_redirects=False)
        assert ok.status_code == 303
        page = client.get("/pipelines")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "test-operator" in page.text
        assert "operator" in page.text
        # Signing out needs the CSRF token too; after it, the session is gone.
        client.post("/logout", data={"csrf": csrf_of(page.text)})
        assert client.get("/pipelines", follow_redirects=False).status_code == 303


def test_pipelines_page_shows_the_groups_lag_and_the_workers_metrics(
    console_env: ConsoleEnv,
    operator: TestClient,
    worker_threads: Any,
    pg_conn: psycopg.Connection[Any],
) -> None:
    produce(console_env.settings, console_env.topic, [audit_event(i) for i in range(40)])
    worker: EmbeddedWorker = worker_threads(console_env.settings, console_env.options)
    assert wait_for(
        lambda: count_rows(pg_conn, console_env.schema, "audit_events") == 40, timeout=60
    )
    # The worker's metrics, announced where local workers announce them.
    with ObservabilityServer(host="127.0.0.1", port=0, registry=worker.registry) as server:
        assert console_env.config.targets_dir is not None
        write_target_file(console_env.config.targets_dir, "audit", f"127.0.0.1:{server.port}")
        page = operator.get("/pipelines")
        assert page.status_code == 200
        assert console_env.group in page.text
        assert console_env.topic in page.text
        assert "audit_events" in page.text
        assert f"127.0.0.1:{server.port}" in page.text  # the worker, found and probed
        table = operator.get("/pipelines/table")  # the fragment the page refreshes
        assert table.status_code == 200
        assert "<html" not in table.text
        assert 'data-testid="lag">0<' in table.text  # caught up: 40 of 40 landed


class _Recorder:
    """Stands in for the publisher where no action is taken (sign-in only)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, event: Event, *, topic: str | None = None) -> None:
        self.events.append(event)


def test_only_keys_of_the_operator_tenants_sign_in_when_they_are_set(
    console_env: ConsoleEnv,
) -> None:
    ops = Principal("apikey:0f0f", frozenset({"admin"}), tenant="_ops")
    customer = Principal("apikey:c0c0", frozenset({"admin"}), tenant="acme")
    app = create_app(
        console_env.settings,
        dataclasses.replace(console_env.config, operator_tenants=frozenset({"_ops"})),
        verifier=StaticKeyVerifier.of({"ops-key": ops, "acme-key": customer}),
        audit=AuditTrail(_Recorder()),
        link_sign_in=True,
    )
    with TestClient(app) as client:
        refused = client.post("/login", data={"key": "acme-key"})
        assert refused.status_code == 401
        assert "belongs to tenant acme" in refused.text
        assert client.get("/login?key=ops-key", follow_redirects=False).status_code == 303
        assert "apikey:0f0f" in client.get("/pipelines").text
