"""The API as a process: SIGTERM stops accepting, lets the in-flight request finish,
then exits 0; every log line of a request carries its id."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from runtime import Settings
from runtime.environment import child_environment
from runtime.ports import ReadyFile
from tests.services.api.conftest import TenantKeys


def _eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``check`` until true or ``timeout`` seconds pass (bounded, no timing assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _blocked_by(settings: Settings, holder: int) -> bool:
    """Some backend waits for a lock that backend ``holder`` holds."""
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
            (holder,),
        ).fetchone()
    return bool(row and row[0])


def _answers(client: httpx.Client) -> bool:
    try:
        client.get("/healthz", timeout=2)
    except httpx.TransportError:
        return False
    return True


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(
    stack_settings: Settings,
    api_schema: str,
    key_prefix: str,
    pg_conn: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    ready_file = ReadyFile(tmp_path, "api")
    env = child_environment(stack_settings, clean=True)
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
        **ready_file.env(),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("api_peer.py")),
            "0",  # any free port: the API reports the one it bound
            api_schema,
            f"{key_prefix}api",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    auth = TenantKeys(stack_settings, api_schema).headers("acme")
    try:
        url = f"http://{ready_file.wait(process, 'api', timeout=60)}"
        with httpx.Client(base_url=url, timeout=10, headers=auth) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the API did not become ready"
                time.sleep(0.1)
            created = client.post("/v1/tenants/acme/projects", json={"name": "slow"})
            pid = created.json()["id"]

            result: dict[str, Any] = {}

            def patch() -> None:
                with httpx.Client(base_url=url, timeout=20, headers=auth) as own:
                    result["response"] = own.patch(
                        f"/v1/tenants/acme/projects/{pid}",
                        json={"description": "after the lock"},
                        headers={"X-Request-ID": "in-flight-1"},
                    )

            # Hold the row lock: the PATCH blocks inside its transaction (in flight).
            with pg_conn.transaction():
                pg_conn.execute(
                    f'SELECT 1 FROM "{api_schema}".projects WHERE id = %s FOR UPDATE', (pid,)
                )
                writer = threading.Thread(target=patch)
                writer.start()
                # In flight = its UPDATE waits for our row lock (not "half a second later").
                holder = pg_conn.info.backend_pid
                assert _eventually(lambda: _blocked_by(stack_settings, holder))
                assert "response" not in result
                process.send_signal(signal.SIGTERM)
                assert _eventually(lambda: not _answers(client)), "still accepting"
                assert process.poll() is None  # still serving the PATCH
            writer.join(20)
            assert result["response"].status_code == 200
            assert result["response"].json()["version"] == 2
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=10)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("request_id") == "in-flight-1"]
    assert access
    assert access[0]["route"] == "/v1/tenants/{tenant}/projects/{project_id}"
    assert access[0]["status"] == 200
    assert any("shutting down" in r.get("message", "") for r in records)
