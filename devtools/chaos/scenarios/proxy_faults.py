"""Scenario ``proxy-faults``: latency and dropped connections between the workers and
Postgres and Kafka.

Two fault-injecting TCP proxies (:class:`~devtools.chaos.proxy.FaultProxy`) sit in
front of the private Postgres and the private broker. The sink workers' DSN points at the
Postgres proxy; the broker advertises the Kafka proxy's port, so every Kafka client —
workers, load generator, census — goes through it (bootstrapping through a proxy alone
is not enough: clients connect to the advertised address after the first metadata).
While the stream runs, every forwarded chunk gets added latency, connections are cut at
random (RST, bounded by ``max_drops``), and at random points every open connection is
cut at once. Then the proxies turn transparent and the stream must converge to exactly
one row per event.

Not proxied: Redis — sink workers do not use it (the ``redis-restart`` scenario covers
the cache against a Redis outage).
"""

from __future__ import annotations

from dataclasses import dataclass

from devtools.chaos.proxy import FaultProxy, ProxyFaults
from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size, fault_points
from devtools.chaos.sink_stream import SinkStream, StreamParams
from devtools.localstack.server import HOST

NAME = "proxy-faults"


@dataclass(frozen=True, slots=True, kw_only=True)
class Params:
    stream: StreamParams
    postgres: ProxyFaults
    kafka: ProxyFaults
    blips: int
    """Times every open connection (of both proxies) is cut at once."""
    budget_s: float


def _params(
    stream: StreamParams, drops: int, pg_rate: float, kafka_rate: float, blips: int, budget_s: float
) -> Params:
    """Latency of 0.5-3.5 ms on every chunk; ``drops`` random cuts at most per proxy."""
    return Params(
        stream=stream,
        postgres=ProxyFaults(latency_s=0.0005, jitter_s=0.003, drop_rate=pg_rate, max_drops=drops),
        kafka=ProxyFaults(latency_s=0.0005, jitter_s=0.003, drop_rate=kafka_rate, max_drops=drops),
        blips=blips,
        budget_s=budget_s,
    )


SIZES: dict[Size, Params] = {
    "tiny": _params(StreamParams(events=4_000, rate=1_000), 10, 0.02, 0.01, 1, 180),
    "quick": _params(StreamParams(events=30_000, rate=3_000), 30, 0.01, 0.005, 3, 300),
    "full": _params(StreamParams(events=300_000, rate=3_000), 300, 0.01, 0.005, 20, 1_800),
}


def run(ctx: ChaosContext, params: Params | None = None) -> ScenarioReport:
    """Run the scenario; the report counts the cut connections as its faults."""
    params = params or SIZES[ctx.size]
    rng = ctx.rng(NAME)
    with ScenarioRun(ctx, NAME, budget_s=params.budget_s) as run:
        # The broker must advertise the proxy's port, so the proxy binds first (port 0)
        # and learns where to forward once the broker is up: no port is picked free.
        kafka_proxy = FaultProxy(target_port=0, seed=ctx.seed, name="kafka-proxy").start()
        run.on_exit(kafka_proxy.stop)
        stack = run.private_stack(kafka_advertised_port=kafka_proxy.port)
        kafka_proxy.target = (HOST, stack.kafka.port)
        pg_proxy = FaultProxy(
            target_port=stack.postgres.port, seed=ctx.seed + 1, name="postgres-proxy"
        ).start()
        run.on_exit(pg_proxy.stop)
        worker_settings = stack.settings.with_overrides(
            postgres_dsn=stack.postgres_dsn(pg_proxy.port)
        )
        stream = SinkStream(
            run,
            stack,
            params.stream,
            group="chaos-proxy",
            seed=rng.randrange(2**31),
            worker_settings=worker_settings,
        ).start()
        pg_proxy.set_faults(params.postgres)
        kafka_proxy.set_faults(params.kafka)
        run.log(f"proxies on: postgres {params.postgres}, kafka {params.kafka}")
        cut_by_blips = 0
        for target in fault_points(rng, params.blips, params.stream.events, high=0.8):
            stream.wait_committed(target)
            run.sleep(rng.random() * 0.3)
            cut = pg_proxy.cut_all() + kafka_proxy.cut_all()
            cut_by_blips += cut
            run.fault(
                f"cut all {cut} open connections at {stream.committed():,} committed", count=cut
            )
        # The stream is over: the proxies turn transparent and the system must converge.
        stream.end_source()
        for proxy in (pg_proxy, kafka_proxy):
            proxy.set_faults(None)
            stats = proxy.stats
            run.note(
                f"{proxy.name}: {stats.connections} connections, {stats.drops} cut, "
                f"{stats.delayed_chunks:,} chunks delayed"
            )
        random_drops = pg_proxy.stats.drops + kafka_proxy.stats.drops - cut_by_blips
        if random_drops:
            run.fault(
                f"{random_drops} connections cut at random while the stream ran",
                count=random_drops,
            )
        stream.finish()
    return run.report
