"""API: cached ``GET /v1/tenants/{t}/projects/{id}`` under a fixed concurrency, with wrk.

The API runs in its own process (uvicorn, one event loop), on a freshly migrated schema
and cache namespace, without the rate limit, view events and access log (see
:mod:`devtools.bench.peers`). Projects are created through ``POST`` first, one is read
once (Redis and the L1 are then warm), and Debian's ``wrk`` drives it with 32 keep-alive
connections: first ``/healthz`` of the same server (the framework's floor: routing,
middleware, JSON), then the cached read. Their ratio is the share of the framework's
capacity a cached read keeps. A second API process without the L1 then serves the same
read from Redis, next to the first. Without ``wrk`` (``deploy/install-tools.sh`` installs it)
the section reports itself as skipped.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from devtools.bench.harness import BenchContext, Figure, stop_process
from runtime.clients import postgres_connect
from runtime.ports import ReadyFile
from services import MIGRATION_SOURCES
from services.api.keys import create_key, create_tenant

__all__ = ["WrkResult", "run"]

SECTION = "api"

CONNECTIONS = 32
_TENANT = "bench"
_START_TIMEOUT_S = 60.0
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run reports: throughput, latency percentiles (ms), failures."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    @classmethod
    def parse(cls, output: str) -> WrkResult:
        """Read ``wrk --latency`` output; ``ValueError`` when a field is missing."""
        rate, total = _RATE.search(output), _TOTAL.search(output)
        latencies = {m[1]: float(m[2]) * _UNITS[m[3]] for m in _LATENCY.finditer(output)}
        if rate is None or total is None or set(latencies) != {"50", "99"}:
            raise ValueError(f"unexpected wrk output:\n{output}")
        errors = sum(int(n) for n in _NON_2XX.findall(output))
        for match in _SOCKET_ERRORS.finditer(output):
            errors += sum(int(n) for n in match.groups())
        return cls(int(total[1]), float(rate[1]), latencies["50"], latencies["99"], errors)


def _wrk(url: str, seconds: float, token: str = "") -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    # One thread: it keeps 32 connections busy at far more than one Python process
    # serves, and leaves the CPU to the server.
    command = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", url]
    if token:  # authenticated like any client (the key lookup is cached in-process)
        command[1:1] = ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return WrkResult.parse(done.stdout)


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API process exited with {process.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API was not ready within {_START_TIMEOUT_S:.0f} s")


def _seed(client: httpx.Client, count: int) -> str:
    """Create ``count`` projects; the path of one of them, read once (now cached)."""
    paths = []
    for i in range(count):
        response = client.post(
            f"/v1/tenants/{_TENANT}/projects",
            json={"name": f"bench project {i}", "description": "created by sidestream bench"},
        )
        response.raise_for_status()
        paths.append(f"/v1/tenants/{_TENANT}/projects/{response.json()['id']}")
    path = paths[len(paths) // 2]
    client.get(path).raise_for_status()
    return path


def _skipped() -> list[Figure]:
    return [
        Figure(
            SECTION,
            "cached GET project",
            0.0,
            "req/s",
            note="skipped: wrk is not installed (run deploy/install-tools.sh)",
        )
    ]


@contextlib.contextmanager
def _server(ctx: BenchContext, schema: str, namespace: str, *flags: str) -> Iterator[str]:
    """The API in its own process; yields its base URL once ``/readyz`` says ready.

    It binds port 0 and reports the port it got in a ready file (:mod:`runtime.ports`).
    """
    ready = ReadyFile(name="bench-api")
    argv = [sys.executable, "-m", "devtools.bench.peers", "api", "0", schema, namespace]
    process = ctx.spawn([*argv, *flags], extra_env=ready.env(), stdout=subprocess.DEVNULL)
    try:
        base = f"http://{ready.wait(process, 'api', timeout=_START_TIMEOUT_S)}"
        with httpx.Client(base_url=base, timeout=30) as client:
            _wait_ready(client, process)
        yield base
    finally:
        stop_process(process)
        ready.remove()


def run(ctx: BenchContext) -> list[Figure]:
    if shutil.which("wrk") is None:
        return _skipped()
    seconds = ctx.sizes.seconds(2, 15)
    schema = ctx.schema("api", MIGRATION_SOURCES)
    namespace = ctx.namespace("api")
    with postgres_connect(ctx.settings, schema=schema, autocommit=True) as conn:
        create_tenant(conn, _TENANT)
        token = create_key(
            conn,
            _TENANT,
            scopes=["write"],
            hash_key=ctx.settings.api_key_hash_secret.get_secret_value().encode(),
        ).token
    auth = {"Authorization": f"Bearer {token}"}
    with _server(ctx, schema, namespace) as base:
        with httpx.Client(base_url=base, timeout=30, headers=auth) as client:
            path = _seed(client, ctx.sizes.pick(10, 100))
        with ctx.console.status(f"wrk, {CONNECTIONS} connections: /healthz, GET (L1)..."):
            _wrk(base + path, 1, token)  # warm-up: connections, code paths, the L1
            healthz = _wrk(base + "/healthz", seconds)
            cached = _wrk(base + path, seconds, token)
    with (
        _server(ctx, schema, namespace, "--no-l1") as base,
        ctx.console.status(f"wrk, {CONNECTIONS} connections: GET (Redis only)..."),
    ):
        _wrk(base + path, 1, token)
        redis_only = _wrk(base + path, seconds, token)
    note = f"{CONNECTIONS} connections, {seconds:g} s, one project"
    failures = cached.errors + healthz.errors + redis_only.errors
    if failures:
        note += f"; {failures} non-2xx/socket errors"
    return [
        Figure(
            SECTION,
            "cached GET project throughput",
            cached.rps,
            "req/s",
            healthz.rps,
            "GET /healthz, same server",
            note=note + " (L1-hot)",
        ),
        Figure(
            SECTION, "cached GET project p50", cached.p50_ms, "ms", healthz.p50_ms, "GET /healthz"
        ),
        Figure(
            SECTION, "cached GET project p99", cached.p99_ms, "ms", healthz.p99_ms, "GET /healthz"
        ),
        Figure(
            SECTION,
            "GET project without L1 (Redis hit) throughput",
            redis_only.rps,
            "req/s",
            cached.rps,
            "with the L1",
            note="a second API process, --no-l1",
        ),
        Figure(
            SECTION,
            "GET project without L1 (Redis hit) p99",
            redis_only.p99_ms,
            "ms",
            cached.p99_ms,
            "with the L1",
        ),
    ]
