"""``run_demo``: the demo's steps in order, from starting the stack to stopping what it started."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from rich.panel import Panel
from rich.progress import Progress

from consumers.delivery import notification_summary
from devtools.demo.catchers import PortZeroController, _HookCatcher, _MailCatcher
from devtools.demo.landing import SINK_TABLES, _count, _lag, _wait_for_landing
from devtools.demo.observed import _observe, _observe_dead_letters
from devtools.demo.processes import DemoRun, _check_workers_alive
from devtools.demo.summary import _print_summary
from devtools.demo.workload import (
    DEMO_TENANTS,
    POISON_RECORDS,
    _demo_keys,
    _drive_api,
    _publish_directly,
)
from devtools.localstack import LocalStack
from producers import apply_topics, plan_topics
from runtime import Settings
from runtime.clients import kafka_admin, postgres_connect
from runtime.migrations import migrate
from runtime.terminal import console
from schemas.topics import load_topics
from services import MIGRATION_SOURCES


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
