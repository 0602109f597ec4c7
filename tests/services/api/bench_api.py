"""Quick measurements of the reference API (not collected by pytest: no timing asserts).

Run: ``.venv/bin/python tests/services/api/bench_api.py [--seconds 10] [--concurrency 32]``
against the running local stack (``make up``). Everything it creates (schema, topics,
Redis keys) is removed afterwards. It prints:

1. cached ``GET /v1/tenants/{t}/projects/{id}``: requests/s and latency percentiles at a
   fixed concurrency, the API in its own process (uvicorn) with and without the L1, and
   a minimal keep-alive HTTP/1.1 client (so the client costs little CPU) in this one;
   pinned to different cores when ``taskset`` exists;
2. write → L1 eviction in another process: PATCH through the API, a third process with
   an L1 of the same namespace records when the invalidation evicts its entry — through
   the API's direct invalidation, and through the outbox → Kafka → consumer path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from consumers import CONSUMER_MIGRATIONS
from producers import OUTBOX_MIGRATIONS
from runtime import load_settings
from runtime.clients import kafka_admin, postgres_connect
from runtime.migrations import migrate
from services import SERVICES_MIGRATIONS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SETTINGS = load_settings()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def env() -> dict[str, str]:
    result = dict(os.environ)
    result.update(
        PYTHONPATH=str(ROOT),
        SIDESTREAM_KAFKA_EXTRA=json.dumps({"fetch.wait.max.ms": "10"}),  # see conftest
    )
    return result


def pinned(cpu: int, argv: list[str]) -> list[str]:
    cores = os.cpu_count() or 1
    if shutil.which("taskset") and cores > 1:
        return ["taskset", "-c", str(cpu % cores), *argv]
    return argv


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return f"p50 {at(0.5):.2f} ms  p99 {at(0.99):.2f} ms  max {ordered[-1] * 1000:.2f} ms"


@contextlib.contextmanager
def environment() -> Iterator[tuple[str, str, dict[str, str]]]:
    token = uuid.uuid4().hex[:8]
    schema, namespace = f"bench_api_{token}", f"bench_api_{token}"
    topics = {s: f"bench_api_{token}_{s}" for s in ("audit_event", "entity_changed")}
    admin = kafka_admin(SETTINGS)
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    for _name, future in admin.create_topics(
        [NewTopic(t, num_partitions=3, replication_factor=1) for t in topics.values()]
    ).items():
        future.result(15)
    with postgres_connect(SETTINGS, autocommit=True) as conn:
        migrate(conn, [OUTBOX_MIGRATIONS, CONSUMER_MIGRATIONS, SERVICES_MIGRATIONS], schema=schema)
    try:
        yield schema, namespace, topics
    finally:
        with postgres_connect(SETTINGS, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for future in admin.delete_topics(list(topics.values())).values():
            with contextlib.suppress(Exception):
                future.result(15)
        client = redis.Redis.from_url(SETTINGS.redis_url.get_secret_value())
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def api_process(
    schema: str, namespace: str, topics: dict[str, str], *flags: str
) -> Iterator[tuple[str, int]]:
    port = free_port()
    argv = [sys.executable, str(HERE / "api_peer.py"), str(port), schema, namespace, "--quiet"]
    argv += [f"--topic={s}={t}" for s, t in topics.items()]
    process = subprocess.Popen(pinned(0, [*argv, *flags]), env=env(), stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(30)


async def load(port: int, path: str, seconds: float, concurrency: int) -> list[float]:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    latencies: list[float] = []

    async def one_connection(stop_at: float, record: bool) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (now := time.perf_counter()) < stop_at:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.decode(errors="replace"))
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if record:
                    latencies.append(time.perf_counter() - now)
        finally:
            writer.close()

    await asyncio.gather(
        *(one_connection(time.perf_counter() + 1.0, False) for _ in range(concurrency))
    )
    await asyncio.gather(
        *(one_connection(time.perf_counter() + seconds, True) for _ in range(concurrency))
    )
    return latencies


def bench_reads(schema: str, namespace: str, topics: dict[str, str], args: Any) -> None:
    for label, flags in (("L1 + Redis", ()), ("Redis only (no L1)", ("--no-l1",))):
        with api_process(schema, namespace, topics, *flags) as (url, pid):
            created = httpx.post(
                f"{url}/v1/tenants/bench/projects", json={"name": uuid.uuid4().hex}
            )
            path = f"/v1/tenants/bench/projects/{created.json()['id']}"
            port = int(url.rsplit(":", 1)[1])
            latencies = asyncio.run(load(port, path, 1.0, args.concurrency))  # warm up
            cpu = cpu_seconds(pid)
            latencies = asyncio.run(load(port, path, args.seconds, args.concurrency))
            per_request = (cpu_seconds(pid) - cpu) / len(latencies)
            print(
                f"cached GET, {label}, concurrency {args.concurrency}: "
                f"{len(latencies) / args.seconds:,.0f} req/s  {percentiles(latencies)}  "
                f"(server CPU {per_request * 1e6:.0f} us/request)",
                flush=True,
            )


def bench_evictions(schema: str, namespace: str, topics: dict[str, str], args: Any) -> None:
    scenarios = (
        ("direct invalidation by the API", ("--no-l1",), False),
        (
            "outbox -> Kafka -> invalidation consumer only",
            ("--no-l1", "--no-direct-invalidation"),
            True,
        ),
    )
    for label, flags, pipeline in scenarios:
        with contextlib.ExitStack() as stack:
            if pipeline:
                peer = subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "pipeline_peer.py"),
                        schema,
                        topics["entity_changed"],
                        f"bench-{uuid.uuid4().hex[:8]}",
                        namespace,
                    ],
                    env=env(),
                    stdout=subprocess.PIPE,
                    text=True,
                )
                stack.callback(peer.wait, 60)
                stack.callback(peer.terminate)
                assert peer.stdout is not None
                assert peer.stdout.readline().strip() == "READY"
            url, _ = stack.enter_context(api_process(schema, namespace, topics, *flags))
            watcher = subprocess.Popen(
                pinned(
                    1,
                    [
                        sys.executable,
                        str(HERE / "l1_peer.py"),
                        SETTINGS.redis_url.get_secret_value(),
                        namespace,
                    ],
                ),
                env=env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(watcher.wait, 10)
            stack.callback(watcher.kill)
            assert watcher.stdin is not None
            assert watcher.stdout is not None
            assert watcher.stdout.readline().strip() == "READY"
            client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
            pid = client.post("/v1/tenants/bench/projects", json={"name": uuid.uuid4().hex}).json()[
                "id"
            ]
            key = f"project/bench/{pid}"
            from_response, from_request = [], []
            deadline = time.monotonic() + 120
            for n in range(args.writes):
                if time.monotonic() > deadline:
                    break
                # Fill Redis through the API (retrying while a tombstone of the previous
                # write is still on its way), then into the watcher's L1.
                version = client.get(f"/v1/tenants/bench/projects/{pid}").json()["version"]
                watcher.stdin.write(f"LOAD {key}\n")
                watcher.stdin.flush()
                held = int(watcher.stdout.readline().split()[1])
                if held != version:
                    time.sleep(0.05)
                    continue
                sent = time.monotonic()
                response = client.patch(
                    f"/v1/tenants/bench/projects/{pid}", json={"description": str(n)}
                )
                answered = time.monotonic()
                new_version = response.json()["version"]
                while True:
                    line = watcher.stdout.readline().split()
                    if line[0] == "EVICTED" and int(line[1]) >= new_version:
                        evicted = float(line[2])
                        break
                from_response.append(evicted - answered)
                from_request.append(evicted - sent)
            print(
                f"write -> L1 eviction in another process ({label}), {len(from_request)} writes:"
                f"\n    from PATCH sent:     {percentiles(from_request)}"
                f"\n    from PATCH answered: {percentiles(from_response)}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; API pinned to core 0, load and watcher to core 1", flush=True)
    with environment() as (schema, namespace, topics):
        bench_reads(schema, namespace, topics, args)
        bench_evictions(schema, namespace, topics, args)


if __name__ == "__main__":
    main()
