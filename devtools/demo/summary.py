"""The summary the demo prints: what landed in Postgres, the API's answers, the cache,
notifications, dead letters, and where to look next.
"""

from __future__ import annotations

from collections import Counter

from rich.table import Table

from devtools.demo.landing import SINK_TABLES
from devtools.demo.observed import Observed
from devtools.demo.processes import Worker
from devtools.demo.workload import POISON_RECORDS, ApiWorkload
from runtime.terminal import console


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
            f"p99 {ms(observed.invalidation_p99_s)} — histogram buckets, counting the writes "
            "made while the worker was still joining its group; steady state at 1,000 "
            "writes/s: `sidestream bench --section invalidation`"
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
