"""The demo (``sidestream demo``, ``make demo``): the whole platform on the local stack,
then a summary.

Steps: start the stack → migrate → create topics → start the reference API and every
worker as real processes → drive a mixed workload against the API (writes go through
the transactional outbox, reads through the cache) and publish events directly (plus a
few poison records) → wait until every event has landed → print what happened → stop
what the demo started.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from confluent_kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from rich.panel import Panel
from rich.progress import Progress
from rich.table import Table

from consumers import SINKS, group_id_for
from consumers.delivery import SignatureError, notification_summary, verify
from devtools.localstack import LocalStack
from producers import apply_topics, plan_topics
from producers.synthetic import Kind, publish_load
from runtime import Settings
from runtime.clients import kafka_admin, kafka_consumer, kafka_producer, postgres_connect
from runtime.errors import SidestreamError
from runtime.migrations import migrate
from runtime.ports import ReadyFile
from runtime.terminal import console
from schemas.topics import load_topics, topic_for
from services import MIGRATION_SOURCES
from services.api.keys import create_key, create_tenant, list_tenants


class DemoError(SidestreamError):
    """A process the demo started did not come up or died; its log tail was printed."""


#: Records that are no event at all, published to show the dead-letter path.
POISON_RECORDS = 3

#: The tables each sink writes, and the event kind it lands.
SINK_TABLES: dict[str, tuple[str, Kind]] = {
    "audit": ("audit_events", "audit"),
    "analytics": ("analytics_events", "analytics"),
    "notifications": ("notifications", "notification"),
}


class PortZeroController(Controller):
    """aiosmtpd's threaded SMTP server on ``port=0`` (any free port): :attr:`port` is the
    one it bound. (aiosmtpd itself would connect to port 0 to check the server is up.)"""

    def _trigger_server(self) -> None:
        server = self.server  # bound: aiosmtpd calls _trigger_server after the bind
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


#: How long a process the demo starts may take to bind its port (imports on a busy machine).
_START_TIMEOUT_S = 60


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    ready: ReadyFile
    metrics_url: str = ""
    url: str = ""


def _report_early_exit(worker: Worker, why: str = "") -> None:
    console.print(
        f"[red]{worker.name} did not come up{f' ({why})' if why else ''}; last log lines:[/]"
    )
    console.print(worker.log.read_text()[-2000:])


@dataclass
class DemoRun:
    """Everything the demo started, so it can stop exactly that.

    Every process binds port 0 and reports the port it got in a ready file
    (:mod:`runtime.ports`): no port is picked free first, so none can be taken meanwhile.
    """

    config: Settings
    log_dir: Path
    workers: list[Worker] = field(default_factory=list)

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str]) -> Worker:
        log = self.log_dir / f"{name}.log"
        ready = ReadyFile(self.log_dir, name)
        env = {**os.environ, "SIDESTREAM_LOG_FORMAT": "json", **ready.env(), **extra_env}
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sidestream", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(name, process, log, ready)
        self.workers.append(worker)
        return worker

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> Worker:
        """Start a worker; :meth:`wait_started` gives it its metrics URL."""
        return self._spawn(
            name,
            ["worker", "run", name],
            {"SIDESTREAM_METRICS_PORT": "0", **(extra_env or {})},
        )

    def wait_started(self) -> None:
        """Wait until every process started so far reported its port (in parallel: they
        start together); exits 1 with the log of the first that did not."""
        for worker in self.workers:
            if worker.metrics_url:
                continue
            try:
                key = "api" if worker.name == "api" else "metrics"
                address = worker.ready.wait(
                    worker.process, key, timeout=_START_TIMEOUT_S, log=worker.log
                )
            except (RuntimeError, TimeoutError) as exc:
                _report_early_exit(worker, str(exc))
                raise DemoError(f"{worker.name} did not come up: {exc}") from None
            if worker.name == "api":
                worker.url = f"http://{address}"
                worker.metrics_url = f"{worker.url}/metrics"
            else:
                worker.metrics_url = f"http://{address}/metrics"

    def start_api(self, extra_env: dict[str, str] | None = None) -> Worker:
        """The reference API as a process; waits until it answers /readyz."""
        api = self._spawn("api", ["api", "--port", "0"], dict(extra_env or {}))
        self.wait_started()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline and api.process.poll() is None:
            try:
                if httpx.get(f"{api.url}/readyz", timeout=1).status_code == 200:
                    return api
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        _report_early_exit(api, "not ready")
        raise DemoError(f"{api.name} did not become ready")

    def stop_workers(self) -> dict[str, int | None]:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        codes: dict[str, int | None] = {}
        for worker in self.workers:
            try:
                codes[worker.name] = worker.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                codes[worker.name] = None
        return codes


def _count(config: Settings, table: str) -> int:
    with postgres_connect(config) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _end_offsets(config: Settings, topic: str) -> dict[int, int]:
    consumer = kafka_consumer(config, f"demo-watermarks-{uuid.uuid4().hex[:6]}")
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def _committed(config: Settings, group: str, topic: str) -> dict[int, int]:
    with postgres_connect(config) as conn:
        rows = conn.execute(
            "SELECT partition, coalesce(next_offset, 0) FROM consumer_offsets"
            " WHERE group_id = %s AND topic = %s",
            (group, topic),
        ).fetchall()
    return {int(p): int(o) for p, o in rows}


@dataclass
class ApiWorkload:
    """What the API answered during the demo."""

    statuses: Counter[int] = field(default_factory=Counter)
    writes: int = 0  # 2xx POST/PATCH on projects: one AuditEvent + EntityChanged each
    views: int = 0  # 2xx item GETs: one AnalyticsEvent each
    notifications: int = 0  # 202s: one NotificationRequested each
    latencies_ms: list[float] = field(default_factory=list)


DEMO_TENANTS = [f"demo-{name}" for name in ("acme", "globex", "initech", "umbrella", "hooli")]


def _demo_keys(config: Settings) -> dict[str, str]:
    """Each demo tenant (made once) and a fresh API key of it, as `sidestream tenants
    create` / `sidestream keys create` would make them: write + notify, and admin, since
    the demo registers each tenant's webhook endpoint."""
    hash_key = config.api_key_hash_secret.get_secret_value().encode()
    keys = {}
    with postgres_connect(config, autocommit=True) as conn:
        known = {tenant.tenant_id for tenant in list_tenants(conn)}
        for tenant in DEMO_TENANTS:
            if tenant not in known:
                create_tenant(conn, tenant, "made by sidestream demo")
            keys[tenant] = create_key(
                conn,
                tenant,
                scopes=["write", "notify", "admin"],
                hash_key=hash_key,
                description="demo",
            ).token
    return keys


async def _drive_api(
    base_url: str,
    operations: int,
    progress: Progress,
    hooks: _HookCatcher,
    keys: dict[str, str],
) -> ApiWorkload:
    """Create projects and a webhook endpoint per tenant, then a mix of cached reads,
    updates and notification requests (emails, and webhooks to the tenant's endpoint),
    each with the API key of the tenant it addresses."""
    result = ApiWorkload()
    rng = random.Random(42)
    tenants = DEMO_TENANTS
    projects: dict[str, list[str]] = {tenant: [] for tenant in tenants}
    task = progress.add_task("driving the API", total=operations)
    run_token = uuid.uuid4().hex[:6]
    done = 0
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:

        async def call(method: str, path: str, client_id: str, **kwargs: Any) -> httpx.Response:
            started = time.perf_counter()
            tenant = path.split("/")[3]  # /v1/tenants/{tenant}/...
            headers = {"X-Client-ID": client_id, "Authorization": f"Bearer {keys[tenant]}"}
            response = await client.request(method, path, headers=headers, **kwargs)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[response.status_code] += 1
            return response

        for tenant in tenants:
            for i in range(8):
                response = await call(
                    "POST",
                    f"/v1/tenants/{tenant}/projects",
                    "setup",
                    # Names are unique per tenant: a run token keeps reruns from colliding.
                    json={"name": f"project {i} ({run_token})", "description": "by the demo"},
                )
                if response.status_code == 201:
                    projects[tenant].append(response.json()["id"])
                    result.writes += 1

        endpoints: dict[str, str] = {}
        for tenant in tenants:
            # Webhooks go to registered endpoints; the secret is shown only in this answer.
            response = await call(
                "POST",
                f"/v1/tenants/{tenant}/webhook-endpoints",
                "setup",
                json={"url": hooks.url(tenant), "event_types": ["invoice_ready"]},
            )
            if response.status_code == 201:
                endpoints[tenant] = response.json()["id"]
                hooks.secrets[tenant] = response.json()["secret"]

        async def client_loop(number: int, count: int) -> None:
            nonlocal done
            client_id = f"demo-client-{number}"
            for _ in range(count):
                tenant = rng.choice(tenants)
                if not projects[tenant]:
                    continue
                project = rng.choice(projects[tenant])
                roll = rng.random()
                if roll < 0.70:
                    response = await call(
                        "GET", f"/v1/tenants/{tenant}/projects/{project}", client_id
                    )
                    result.views += response.status_code == 200
                elif roll < 0.85:
                    await call("GET", f"/v1/tenants/{tenant}/projects?limit=20", client_id)
                elif roll < 0.95:
                    response = await call(
                        "PATCH",
                        f"/v1/tenants/{tenant}/projects/{project}",
                        client_id,
                        json={"description": f"edited {rng.random():.6f}"},
                    )
                    result.writes += response.status_code == 200
                else:
                    email = {
                        "channel": "EMAIL",
                        "recipient": f"ops@{tenant}.example",
                        "template": "welcome",
                        "params": {"name": tenant},
                    }
                    hook = {
                        "channel": "WEBHOOK",
                        "endpoint_id": endpoints.get(tenant),
                        "template": "invoice_ready",
                        "params": {"invoice_id": f"inv-{done}", "amount": "42 EUR"},
                    }
                    response = await call(
                        "POST",
                        f"/v1/tenants/{tenant}/notifications",
                        client_id,
                        json=hook if roll < 0.975 and tenant in endpoints else email,
                    )
                    result.notifications += response.status_code == 202
                done += 1
                progress.update(task, completed=done)

        clients = 16
        await asyncio.gather(*(client_loop(n, operations // clients) for n in range(clients)))
    return result


def _publish_directly(
    config: Settings, events: int, poison: int, progress: Progress
) -> Counter[str]:
    """Events services publish without a database write, plus bytes that are no event."""
    task = progress.add_task("publishing", total=events)
    result = publish_load(
        config,
        rate=5000,
        count=events,
        duration=None,
        kinds=("audit", "analytics", "notification"),
        seed=int(time.time()),
        on_progress=lambda done, _total: progress.update(task, completed=done),
    )
    raw = kafka_producer(config)
    for _ in range(poison):
        raw.produce(topic_for("audit_event"), value=os.urandom(24), key=b"poison")
    raw.flush(10)
    return result.published


def _wait_for_landing(
    config: Settings,
    progress: Progress,
    timeout: float,
    *,
    before: dict[str, int],
    expected: dict[str, int],
    dead_letters: Callable[[], int],
    poison: int,
) -> bool:
    """Wait until every sink has written at least as many new rows as events went out,
    and the poison records reached the dead-letter topic."""
    task = progress.add_task("landing in Postgres", total=sum(expected.values()))
    deadline = time.monotonic() + timeout
    while True:
        new = {
            name: _count(config, table) - before[name]
            for name, (table, _kind) in SINK_TABLES.items()
        }
        progress.update(task, completed=sum(min(new[n], expected[n]) for n in expected))
        if all(new[n] >= expected[n] for n in expected) and dead_letters() >= poison:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)


def _lag(config: Settings) -> dict[str, int]:
    """Records between each sink group's Postgres offsets and its topic's end offsets."""
    lag = {}
    for name in SINK_TABLES:
        topic = topic_for(SINKS[name]().event_type)
        committed = _committed(config, group_id_for(name), topic)
        ends = _end_offsets(config, topic)
        # Some brokers (the local one) report end offsets short: clamp at zero.
        lag[name] = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
    return lag


def _samples(url: str) -> list[Any]:
    """Every sample on a /metrics page (empty if unreachable)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - our own http URL
            text = response.read().decode()
    except OSError:
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _scrape(url: str, metric: str, **labels: str) -> float:
    """Sum of a metric's samples on a /metrics page whose labels match ``labels``."""
    return float(
        sum(
            sample.value
            for sample in _samples(url)
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items())
        )
    )


def _histogram_quantile(url: str, metric: str, quantile: float) -> float | None:
    """A quantile estimated from a histogram's buckets, as Prometheus does (upper bound)."""
    buckets: dict[float, float] = {}
    for sample in _samples(url):
        if sample.name == f"{metric}_bucket":
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    if not buckets or max(buckets.values()) == 0:
        return None
    total = buckets[max(buckets)]
    for bound in sorted(buckets):
        if buckets[bound] >= quantile * total:
            return bound
    return None


def run_demo(
    config: Settings,
    *,
    events: int = 3000,
    requests: int = 800,
    keep_stack: bool = False,
    timeout: float = 120,
) -> int:
    """Run the main job end to end on the local stack, print a summary; the exit code
    (0: everything landed and every process drained cleanly).

    ``events`` are published directly, ``requests`` mixed API requests are made after
    set-up; ``keep_stack`` leaves Kafka/Postgres/Redis running; ``timeout`` bounds the
    wait for everything to land.
    """
    stack = LocalStack(config)
    console.print(
        Panel.fit(
            "Sidestream demo: API → outbox/publisher → Kafka → batch workers → Postgres,\n"
            "with reads served from Redis and invalidated by the change events",
            style="bold",
        )
    )
    was_up = stack.is_up()
    with console.status("starting the local stack (Kafka, Postgres, Redis)..."):
        stack.up()
    console.print(f"[green]✓[/] local stack up{' (already running)' if was_up else ''}")
    log_dir = Path(config.stack_dir) / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    demo = DemoRun(config, log_dir)
    cleanups: list[Callable[[], object]] = []
    started = time.monotonic()
    exit_codes: dict[str, int | None] = {}
    try:
        with postgres_connect(config, autocommit=True) as conn:
            applied = migrate(conn, MIGRATION_SOURCES, schema=config.postgres_schema)
        console.print(f"[green]✓[/] database migrated ({len(applied)} new migrations)")
        admin = kafka_admin(config)
        done = apply_topics(admin, plan_topics(admin, load_topics()))
        created = sum(1 for line in done if line.startswith("created"))
        console.print(f"[green]✓[/] topics ready ({created} created)")

        before = {name: _count(config, table) for name, (table, _) in SINK_TABLES.items()}
        for name in (*SINK_TABLES, "outbox-relay", "invalidation"):
            demo.start_worker(name)
        # Emails go to a local mail catcher the demo runs (no mail leaves the machine).
        mail = _MailCatcher()
        smtp = PortZeroController(mail, hostname="127.0.0.1", port=0)
        smtp.start()
        cleanups.append(smtp.stop)
        # ...and webhooks to a local receiver: the development setting lets the SSRF guard
        # allow 127.0.0.1 (never set it in production).
        hooks = _HookCatcher()
        cleanups.append(hooks.stop)
        local_targets = {"SIDESTREAM_DELIVERY_ALLOW_PRIVATE_TARGETS": "true"}
        demo.start_worker(
            "notify",
            {
                "SIDESTREAM_DELIVERY_SMTP_HOST": "127.0.0.1",
                "SIDESTREAM_DELIVERY_SMTP_PORT": str(smtp.port),
                **local_targets,
            },
        )
        keys = _demo_keys(config)
        console.print(
            f"[green]✓[/] {len(keys)} tenants, each with an API key "
            f"(e.g. {keys[DEMO_TENANTS[0]][:20]}…; `sidestream keys list`)"
        )
        api = demo.start_api(local_targets)
        console.print(
            f"[green]✓[/] started the API ({api.url}) and workers: "
            f"{', '.join(w.name for w in demo.workers if w.name != 'api')}"
        )

        with Progress(console=console, transient=True) as progress:
            published_at = time.monotonic()
            workload = asyncio.run(_drive_api(api.url, requests, progress, hooks, keys))
            direct = _publish_directly(config, events, poison=POISON_RECORDS, progress=progress)
            expected = {
                "audit": direct["audit"] + workload.writes,
                "analytics": direct["analytics"] + workload.views,
                "notifications": direct["notification"] + workload.notifications,
            }
            landed = _wait_for_landing(
                config,
                progress,
                timeout,
                before=before,
                expected=expected,
                dead_letters=lambda: _observe_dead_letters(demo),
                poison=POISON_RECORDS,
            )
            land_seconds = time.monotonic() - published_at
        _check_workers_alive(demo)
        after = {name: _count(config, table) for name, (table, _) in SINK_TABLES.items()}
        lag = _lag(config)
        observed = _observe(demo)
        with postgres_connect(config) as conn:
            deliveries = notification_summary(conn)
    finally:
        exit_codes = demo.stop_workers()
        for cleanup in cleanups:
            cleanup()
        if not keep_stack and not was_up:
            stack.down()

    _print_summary(
        direct=direct,
        workload=workload,
        rows={name: after[name] - before[name] for name in SINK_TABLES},
        expected=expected,
        lag=lag,
        observed=observed,
        deliveries=deliveries,
        emails=mail.received,
        webhooks=hooks.verified,
        landed=landed,
        land_seconds=land_seconds,
        total_seconds=time.monotonic() - started,
        workers=demo.workers,
        exit_codes=exit_codes,
        stack_left_up=keep_stack or was_up,
    )
    return 0 if landed and all(code == 0 for code in exit_codes.values()) else 1


class _HookCatcher:
    """A local webhook receiver that counts requests whose ``Sidestream-Signature``
    verifies with the secret of the tenant's endpoint (``/hooks/<tenant>``)."""

    def __init__(self) -> None:
        catcher = self
        self.secrets: dict[str, str] = {}
        self.verified = 0
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                secret = catcher.secrets.get(self.path.rsplit("/", 1)[-1], "")
                try:
                    verify(secret, self.headers.get("Sidestream-Signature", ""), body)
                except SignatureError:
                    self.send_response(401)
                else:
                    with lock:
                        catcher.verified += 1
                    self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, tenant: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/{tenant}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _MailCatcher:
    """An SMTP handler that counts what it receives (aiosmtpd calls handle_DATA)."""

    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.received += 1
        return "250 OK"


@dataclass
class Observed:
    """Figures scraped from the processes' /metrics before they stop."""

    dead_letters: int
    cache_hits_l1: float
    cache_hits_redis: float
    cache_misses: float
    invalidation_p50_s: float | None
    invalidation_p99_s: float | None

    @property
    def hit_ratio(self) -> float | None:
        reads = self.cache_hits_l1 + self.cache_hits_redis + self.cache_misses
        return (self.cache_hits_l1 + self.cache_hits_redis) / reads if reads else None


def _observe_dead_letters(demo: DemoRun) -> int:
    return int(sum(_scrape(w.metrics_url, "sidestream_dead_letters_total") for w in demo.workers))


def _observe(demo: DemoRun) -> Observed:
    by_name = {worker.name: worker.metrics_url for worker in demo.workers}
    api, invalidation = by_name["api"], by_name["invalidation"]
    return Observed(
        dead_letters=_observe_dead_letters(demo),
        cache_hits_l1=_scrape(api, "sidestream_cache_hits_total", layer="l1"),
        cache_hits_redis=_scrape(api, "sidestream_cache_hits_total", layer="redis"),
        cache_misses=_scrape(api, "sidestream_cache_misses_total"),
        invalidation_p50_s=_histogram_quantile(
            invalidation, "sidestream_invalidation_lag_seconds", 0.5
        ),
        invalidation_p99_s=_histogram_quantile(
            invalidation, "sidestream_invalidation_lag_seconds", 0.99
        ),
    )


def _check_workers_alive(demo: DemoRun) -> None:
    dead = [w for w in demo.workers if w.process.poll() is not None]
    for worker in dead:
        _report_early_exit(worker)
    if dead:
        raise DemoError(f"{', '.join(w.name for w in dead)} exited early")


def _print_summary(
    *,
    direct: Counter[str],
    workload: ApiWorkload,
    rows: dict[str, int],
    expected: dict[str, int],
    lag: dict[str, int],
    observed: Observed,
    deliveries: dict[str, int],
    emails: int,
    webhooks: int,
    landed: bool,
    land_seconds: float,
    total_seconds: float,
    workers: list[Worker],
    exit_codes: dict[str, int | None],
    stack_left_up: bool,
) -> None:
    def status(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]no[/]"

    def ms(seconds: float | None) -> str:
        if seconds is None:
            return "n/a"
        if seconds == float("inf"):
            return "> 60 s (a backlog of old events)"
        return f"≤{seconds * 1000:.0f} ms"

    table = Table(title="what landed in Postgres")
    for column in ("sink", "events sent", "new rows", "lag", "Postgres table"):
        table.add_column(column)
    for name, (pg_table, _kind) in SINK_TABLES.items():
        table.add_row(
            name, f"{expected[name]:,}", f"{rows[name]:,}", str(lag.get(name, "?")), pg_table
        )
    console.print(table)
    if any(rows[name] > expected[name] for name in SINK_TABLES):
        console.print(
            "  (more rows than events sent: the workers also consumed events that were already "
            "waiting in the topics, e.g. from `make load`)"
        )
    latencies = sorted(workload.latencies_ms) or [0.0]
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(workload.statuses.items()))
    hit_ratio = observed.hit_ratio
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    console.print(
        f"• API: {sum(workload.statuses.values()):,} requests ({statuses}); "
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms\n"
        f"• {workload.writes} API writes committed their row and their AuditEvent + "
        "EntityChanged in one transaction (the outbox relay published them)"
    )
    if hit_ratio is None:
        console.print("• cache: no reads recorded")
    else:
        console.print(
            f"• cache: hit ratio {hit_ratio:.0%} (L1 {observed.cache_hits_l1:.0f}, Redis "
            f"{observed.cache_hits_redis:.0f}, misses {observed.cache_misses:.0f}); "
            f"invalidation lag (event → keys tombstoned) p50 {ms(observed.invalidation_p50_s)}, "
            f"p99 {ms(observed.invalidation_p99_s)}"
        )
    by_status = ", ".join(
        f"{status_name} {deliveries.get(status_name, 0):,}"
        for status_name in ("pending", "sending", "sent", "failed")
    )
    console.print(
        f"• notifications by status: {by_status} (the notify worker keeps delivering; "
        f"{emails:,} emails reached the demo's local mail catcher, {webhooks:,} webhooks "
        "its local receiver (each signature checked with its endpoint's secret), "
        f"{deliveries.get('attempts', 0):,} attempts recorded)"
    )
    console.print(
        f"• {sum(direct.values()):,} events were published directly; {POISON_RECORDS} poison "
        "records too, "
        f"and {observed.dead_letters} landed in dead-letter topics (*.dlq) with their error "
        "class and source offset\n"
        f"• everything landed: {status(landed)} — {land_seconds:.1f}s from the first request "
        f"to the last commit (includes ~3s consumer-group joins), demo total {total_seconds:.1f}s\n"
        "• every row and its Kafka offset were committed in one Postgres transaction; "
        f"processes drained cleanly on SIGTERM: {status(all(c == 0 for c in exit_codes.values()))}"
        f" {exit_codes}"
    )
    console.print("where to look (`make api`, `make worker W=audit`, ... serve the same):")
    console.print("  the operator console: `make console` (pipelines, dead letters, replays, ...)")
    for worker in workers:
        console.print(f"  {worker.name:>14}: {worker.metrics_url}  (log: {worker.log})")
    console.print(
        "the local stack is still running (stop it with `make down`)"
        if stack_left_up
        else "stopped the local stack again (`make up` keeps it running)"
    )
