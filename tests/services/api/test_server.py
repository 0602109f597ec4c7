"""The API as a process: SIGTERM stops accepting, lets the in-flight request finish,
then exits 0; every log line of a request carries its id."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from runtime import Settings
from runtime.environment import child_environment


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(
    stack_settings: Settings,
    api_schema: str,
    key_prefix: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    port = free_port()
    env = child_environment(stack_settings, clean=True)
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("api_peer.py")),
            str(port),
            api_schema,
            f"{key_prefix}api",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
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
                with httpx.Client(base_url=url, timeout=20) as own:
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
                time.sleep(0.5)
                assert "response" not in result
                process.send_signal(signal.SIGTERM)
                time.sleep(0.5)
                try:
                    refused = client.get("/healthz").status_code
                except httpx.TransportError:
                    refused = None
                assert refused is None  # no longer accepting
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
