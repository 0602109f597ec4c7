"""The faust app: source topics, tables, the counting agent, the web views, metrics.

`build_live_app` declares everything on a fresh ``faust.App`` and returns it as a
`LiveAnalyticsApp`; `consumers.live_analytics.worker` runs it. Build it inside the event
loop that will run it (faust binds its services to the loop they first see).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.types import TP, Message, StreamT
from prometheus_client import CollectorRegistry

from consumers.live_analytics import _transport, views
from consumers.live_analytics.codec import AvroEventCodec
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from consumers.live_analytics.options import LiveAnalyticsOptions
from consumers.live_analytics.processor import LiveProcessor
from consumers.live_analytics.sensor import CachedPrometheusMonitor
from consumers.live_analytics.snapshot import SnapshotWriter
from consumers.live_analytics.tables import TABLE_NAMES, LiveTables
from runtime import ConfigError, Settings
from schemas import EventDeserializer, EventSerializer

__all__ = ["LiveAnalyticsApp", "build_live_app", "internal_topics"]

AGENT_NAME = "count-windows"
#: How often an idle worker checks that Postgres answers (for ``/readyz``).
DATABASE_CHECK_INTERVAL_S = 5.0


def internal_topics(app_id: str) -> list[str]:
    """Topics faust creates for an app: the table changelogs and the assignor's topic.

    Delete them with the app (the local broker keeps every message in memory).
    """
    return [f"{app_id}-{name}-changelog" for name in TABLE_NAMES] + [
        f"{app_id}-__assignor-__leader"
    ]


def _credentials(settings: Settings) -> Any:
    """faust credentials for the configured security protocol (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        ca = settings.kafka_ssl_ca_location
        context = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=None if password is None else password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism or "PLAIN",
    )


@dataclass(slots=True)
class LiveAnalyticsApp:
    """The faust app and the objects the worker, the views and tests reach into."""

    app: faust.App
    batches: _transport.BatchDelivery
    """Where the consumer hands the source records; closed before the app stops."""
    tables: LiveTables
    processor: LiveProcessor
    metrics: LiveAnalyticsMetrics
    writer: SnapshotWriter
    options: LiveAnalyticsOptions
    loop: asyncio.AbstractEventLoop
    assigned: set[int] = field(default_factory=set)
    """Source partitions this worker holds now."""
    recovered: threading.Event = field(default_factory=threading.Event)
    """Set once the tables are restored and the agent runs (cleared while rebalancing)."""

    @property
    def ready(self) -> bool:
        """Tables restored, partitions held, Postgres writable: what ``/readyz`` reports."""
        return self.recovered.is_set() and not self.app.rebalancing and self.writer.ready


def build_live_app(
    settings: Settings,
    options: LiveAnalyticsOptions,
    *,
    topics: tuple[str, ...],
    alerts_topic: str,
    partitions: int,
    writer: SnapshotWriter,
    metrics: LiveAnalyticsMetrics,
    registry: CollectorRegistry,
    stop: threading.Event,
) -> LiveAnalyticsApp:
    """Declare the live analytics app; call from inside the loop that will run it."""
    _transport.register()
    if settings.kafka_extra:
        raise ConfigError(
            "SIDESTREAM_KAFKA_EXTRA holds librdkafka properties, which the live analytics "
            "worker (faust/aiokafka) cannot apply: unset it for this worker"
        )
    session_s = settings.session_timeout_ms / 1000
    data_dir = options.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        options.app_id,
        broker=_transport.brokers(settings.kafka_bootstrap_servers),
        broker_credentials=_credentials(settings),
        # Settings come from `Settings`, read once at the edge: faust reads no environment.
        env={},
        autodiscover=False,
        store=options.store,
        datadir=str(data_dir),
        # aiokafka can use neither idempotence nor transactions on every broker (not on the
        # local one): at least once, with the consequences in the processor's docstring.
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=options.replication_factor,
        table_standby_replicas=options.standby_replicas,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=session_s,
        broker_heartbeat_interval=min(3.0, session_s / 3),
        # How long a rebalance waits for members to rejoin; the local broker's joins take
        # about half the session timeout.
        broker_rebalance_timeout=max(session_s, 10.0),
        broker_commit_interval=options.commit_interval_s,
        # Changelog writes trickle out one per table update; lingering lets them leave in
        # batches (measured here: +30% events/s at 50 ms).
        producer_linger=options.producer_linger_s,
        web_enabled=True,
        web_host=options.web_host,
        web_bind=options.web_host,
        web_port=options.web_port,
    )
    # faust's own metrics into the injected registry, also served on faust's /metrics,
    # counted by a sensor that does not look its labels up again for every record.
    setup_prometheus_sensors(app, registry=registry, name_prefix="faust")
    faust_monitor: Any = app.monitor
    app.monitor = CachedPrometheusMonitor(metrics=faust_monitor._metrics)
    deserializer = EventDeserializer(schema_registry_url=settings.schema_registry_url)
    serializer = EventSerializer(schema_registry_url=settings.schema_registry_url)
    # Values stay bytes in faust; the processor decodes them (`AvroEventCodec.decode`).
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    source_codec = AvroEventCodec(deserializer=deserializer, serializer=serializer)
    alerts = app.topic(
        alerts_topic,
        key_serializer="raw",
        value_serializer=AvroEventCodec(
            deserializer=deserializer, serializer=serializer, topic=alerts_topic
        ),
    )
    tables = LiveTables(app, partitions=partitions)

    def highwater(topic: str, partition: int) -> int | None:
        """End offset of a source partition from the last fetch (None: not known yet)."""
        try:
            end: int | None = app.consumer.highwater(TP(topic, partition))
        except (AssertionError, KeyError, ConsumerNotStarted):
            return None  # not assigned (any more), or the consumer is not running
        return end

    processor = LiveProcessor(
        tables=tables,
        writer=writer,
        alerts=alerts,
        rule=options.spike,
        grace_s=options.grace_s,
        producer=options.producer_name,
        metrics=metrics,
        stop=stop,
        sources=topics,
        decode=source_codec.decode,
        highwater=highwater,
        source_idle_s=options.source_idle_s,
    )

    async def count_fetched(records: list[Message]) -> None:
        # One micro-batch at a time, in order: the tables, the clocks and the closing of
        # windows are never touched by two batches at once. Acknowledged once counted and
        # their changelog records handed to the producer, and nowhere else: faust commits
        # acknowledged offsets only, after flushing the producer.
        await processor.process_batch(records)
        consumer = app.consumer
        for record in records:
            consumer.ack(record)

    batches = _transport.BatchDelivery(
        frozenset(topics), count_fetched, batch_max=options.batch_max
    )
    _transport.deliver_in_batches(app, batches)
    live = LiveAnalyticsApp(
        app=app,
        batches=batches,
        tables=tables,
        processor=processor,
        metrics=metrics,
        writer=writer,
        options=options,
        loop=asyncio.get_running_loop(),
    )

    async def subscribe_sources(stream: StreamT[Any]) -> None:
        # faust subscribes to the topics its agents read; the consumer hands these topics'
        # records to `count_fetched` a fetch at a time (`_transport.deliver_in_batches`),
        # so none reaches this stream.
        async for event in stream:
            raise RuntimeError(
                f"a record of {event.message.topic} reached the agent: the batch hand-over "
                "of the sidestream-kafka transport is not in place"
            )

    app.agent(source, name=AGENT_NAME)(subscribe_sources)

    async def close_idle_windows() -> None:
        # Windows may become final with no new event (a silent source stops holding the
        # watermark back): look again now and then, between rebalances only.
        if live.recovered.is_set() and not app.rebalancing:
            await processor.close_idle()

    app.timer(interval=max(0.5, options.source_idle_s / 2))(close_idle_windows)

    async def check_database() -> None:
        # Readiness while no window closes: is Postgres there for the next write? Bounded
        # below the interval: a check still waiting when the next is due makes mode log
        # "Timer … is overlapping" at every round of an outage.
        await asyncio.to_thread(writer.check, timeout_s=DATABASE_CHECK_INTERVAL_S / 2)

    app.timer(interval=DATABASE_CHECK_INTERVAL_S)(check_database)

    # faust's signals call receivers as (sender, *args, signal=..., **kwargs).
    def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        live.recovered.clear()
        live.assigned.clear()
        tables.forget_clocks()
        processor.revoked()

    def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        live.assigned.update(tp.partition for tp in assigned if tp.topic in topics)

    def on_rebalanced(sender: Any, *args: Any, **kwargs: Any) -> None:
        # Sent once the tables are restored, before the agent gets events again.
        tables.rebuild_index()
        processor.resumed(set(live.assigned))
        live.recovered.set()

    signals: Any = app  # mode's signal types reject any handler signature under mypy
    signals.on_partitions_revoked.connect(on_revoked)
    signals.on_partitions_assigned.connect(on_assigned)
    signals.on_rebalance_complete.connect(on_rebalanced)

    _add_views(app, live)
    return live


def _add_views(app: faust.App, live: LiveAnalyticsApp) -> None:
    tables = live.tables

    def not_here(web: Any, tenant: str) -> Any:
        return web.json(
            {"error": f"tenant {tenant!r} has no open window on this worker"}, status=404
        )

    @app.page("/live/tenants/")
    async def tenants(web: Any, request: Any) -> Any:
        return web.json(views.tenants_view(tables, live.assigned))

    @app.page("/live/tenants/{tenant}/")
    async def tenant(web: Any, request: Any, tenant: str) -> Any:
        body = views.tenant_view(tables, tenant, live.assigned, top_n=live.options.top_n)
        return not_here(web, tenant) if body is None else web.json(body)

    @app.page("/live/tenants/{tenant}/windows/")
    async def tenant_windows(web: Any, request: Any, tenant: str) -> Any:
        body = views.tenant_windows_view(tables, tenant, live.assigned)
        return not_here(web, tenant) if body is None else web.json(body)

    @app.page("/live/tenants/{tenant}/top/")
    async def top(web: Any, request: Any, tenant: str) -> Any:
        try:
            n = int(request.query.get("n", live.options.top_n))
        except ValueError:
            n = 0
        if not 1 <= n <= 1000:
            return web.json({"error": "n must be an integer from 1 to 1000"}, status=400)
        body = views.top_view(tables, tenant, live.assigned, n=n)
        return not_here(web, tenant) if body is None else web.json(body)

    @app.page("/live/partitions/")
    async def partitions(web: Any, request: Any) -> Any:
        return web.json(views.partitions_view(tables, live.assigned))
