"""Invalidation: ``EntityChanged`` published → its key tombstoned in Redis, at 1,000 writes/s.

``EventPublisher`` → a fresh entity-changes topic → the invalidation consumer (its own
process: ``python -m devtools.bench.peers invalidation``, which calls
``run_invalidation_worker`` with the registry's defaults — 20 ms batch wait, 10 s
tombstones — on a scratch cache namespace) → one tombstone per key in Redis. Measuring
starts once the worker holds every partition and a warm-up batch was tombstoned, so
neither the group join nor the first fetch is inside the window.

Each event names a fresh entity (``project/<tenant>/<n>``, version 1), so every event
writes exactly one tombstone (none is folded into another's or found already current).
Event *i* is due at ``start + i / rate`` and is published as soon as it is due; its
latency starts at that due time, so a publisher that falls behind shows up as latency
(no coordinated omission).

When a tombstone becomes visible is read from the L1 eviction channel
(``<namespace>:invalidations``): the invalidation script writes the tombstone and
``PUBLISH``es on that channel in one atomic Lua call, so the message leaves Redis exactly
when the tombstone becomes readable; its arrival here (a subscriber thread in this
process) adds only the delivery, well under a millisecond on loopback. Every announced
key is then read back (one pipelined ``GET`` per drained burst, after its arrival was
timed) and must hold a tombstone of its version, so the figure never counts an
announcement without its tombstone.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from redis import Redis

from consumers import CONSUMER_MIGRATIONS
from devtools.bench.harness import (
    BenchContext,
    Figure,
    Profile,
    Target,
    claimed_partitions,
    percentile,
    profiled,
    stop_process,
    wait_until,
)
from producers.delivery import DeliveryReport
from producers.publisher import EventPublisher
from runtime import new_registry
from runtime.clients import redis_client
from schemas import ChangeKind, EntityChanged
from services.cache.entry import decode_entry
from services.cache.keys import Keys
from services.cache.tombstones import decode_message
from services.entities import item_key

__all__ = ["run"]

SECTION = "invalidation"

_PARTITIONS = 6  # the entity-changes topic's (schemas/topics.yaml defaults)
_TENANT = "bench"
_ENTITY = "project"
_PRODUCER = "bench-invalidation"
_WARMUP = 100
_LISTEN_S = 0.05  # how long one wait for a message blocks (bounds how fast we stop)


class _TombstoneWatch:
    """Subscribes to the invalidation channel on its own thread; records, per key, the
    ``time.monotonic()`` its announcement arrived, and checks its tombstone is readable."""

    def __init__(self, ctx: BenchContext, keys: Keys) -> None:
        self._ctx = ctx
        self._keys = keys
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tombstone-watch", daemon=True)
        self.missing_tombstones: list[str] = []
        self.error: BaseException | None = None

    def seen(self, key: str) -> float | None:
        with self._lock:
            return self._seen.get(key)

    def count(self, keys: list[str]) -> int:
        with self._lock:
            return sum(key in self._seen for key in keys)

    def done(self, keys: list[str]) -> bool:
        """Every key seen, or the watch failed (no point waiting for the rest)."""
        return self.error is not None or self.count(keys) == len(keys)

    def __enter__(self) -> _TombstoneWatch:
        self._thread.start()
        if not self._subscribed.wait(10) and self.error is None:
            self.error = TimeoutError("not subscribed to the invalidation channel within 10 s")
        if self.error is not None:
            self.__exit__()
            raise RuntimeError(f"cannot watch tombstones: {self.error}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        client = redis_client(self._ctx.settings, socket_timeout=5)
        # redis-py leaves the synchronous pubsub() unannotated.
        pubsub = client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self._keys.channel)
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=_LISTEN_S)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._subscribed.set()
                    continue
                # Drain what already arrived, timing each message as it is taken, then
                # read the burst's tombstones back in one round trip.
                burst: list[tuple[str, int]] = []
                while message is not None:
                    if message["type"] == "message":
                        key, version = decode_message(message["data"])
                        arrived = time.monotonic()
                        with self._lock:
                            self._seen.setdefault(key, arrived)
                        burst.append((key, version))
                    message = pubsub.get_message(timeout=0)
                self._check(client, burst)
        except BaseException as exc:  # reported by the caller, not lost on this thread
            self.error = exc
        finally:
            pubsub.close()
            client.close()

    def _check(self, client: Redis, burst: list[tuple[str, int]]) -> None:
        pipe = client.pipeline(transaction=False)
        for key, _version in burst:
            pipe.get(self._keys.entry(key))
        for (key, version), blob in zip(burst, pipe.execute(), strict=True):
            entry = decode_entry(blob)
            if entry is None or not entry.is_tombstone or entry.version < version:
                self.missing_tombstones.append(key)


def _event(index: int, occurred_at: datetime, prefix: str) -> EntityChanged:
    """The change of a fresh entity (version 1), as the API's writes build it."""
    return EntityChanged.new(
        tenant_id=_TENANT,
        producer=_PRODUCER,
        occurred_at=occurred_at,
        entity_type=_ENTITY,
        entity_id=f"{prefix}{index}",
        version=1,
        change_kind=ChangeKind.CREATED,
    )


class _Acks:
    """When Kafka acknowledged each change (the publisher's delivery reports), by Kafka key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: dict[bytes, float] = {}
        self.failed = 0

    def __call__(self, report: DeliveryReport) -> None:
        arrived = time.monotonic()
        with self._lock:
            if report.delivered and report.key is not None:
                self._at[report.key] = arrived
            else:
                self.failed += 1

    def at(self, key: bytes) -> float | None:
        with self._lock:
            return self._at.get(key)


def _publish_paced(
    publisher: EventPublisher, topic: str, count: int, rate: float
) -> tuple[dict[str, tuple[bytes, float]], float]:
    """Publish ``count`` changes, change *i* once ``start + i / rate`` (monotonic) is due.

    Returns, per cache key, the change's Kafka key and due time (monotonic), and the
    seconds publishing took."""
    started_wall, started = datetime.now(UTC), time.monotonic()
    due_at: dict[str, tuple[bytes, float]] = {}
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        while sent < due:
            event = _event(sent, started_wall + timedelta(seconds=sent / rate), "m")
            publisher.publish(event, topic=topic)
            key = item_key(_TENANT, _ENTITY, event.entity_id)
            due_at[key] = (event.key, started + sent / rate)
            sent += 1
        time.sleep(0.001)
    return due_at, time.monotonic() - started


def run(ctx: BenchContext) -> list[Figure]:
    rate = 1_000  # the target is stated at 1,000 writes/s: quick runs shorten, not slow
    count = max(1, round(rate * ctx.sizes.seconds(2, 10)))
    topic = ctx.topic("inval", partitions=_PARTITIONS)
    schema = ctx.schema("inval", [CONSUMER_MIGRATIONS])
    namespace = ctx.namespace("inval")
    group = ctx.name("g")
    peer = [sys.executable, "-m", "devtools.bench.peers", "invalidation", namespace]
    worker = ctx.spawn([*peer, "--group", group, "--topic", topic, "--schema", schema])
    acks = _Acks()
    publisher = EventPublisher(
        settings=ctx.settings,
        registry=new_registry(),
        producer=_PRODUCER,
        max_queue=count + 10_000,
        on_delivery=acks,
    )
    recording: Profile | None = None
    try:
        with _TombstoneWatch(ctx, Keys(namespace)) as watch:
            with ctx.console.status("invalidation: waiting for the worker to join its group..."):
                wait_until(
                    lambda: (
                        worker.poll() is not None
                        or claimed_partitions(ctx, schema, group) == _PARTITIONS
                    ),
                    timeout=120,
                )
                if worker.poll() is not None:
                    raise RuntimeError(f"the invalidation worker exited with {worker.returncode}")
                if claimed_partitions(ctx, schema, group) != _PARTITIONS:
                    raise RuntimeError(
                        f"the invalidation worker did not claim {_PARTITIONS} partitions"
                    )
                now = datetime.now(UTC)
                warmup = [_event(i, now, "w") for i in range(_WARMUP)]
                for event in warmup:
                    publisher.publish(event, topic=topic)
                publisher.flush(30)
                warm_keys = [item_key(_TENANT, _ENTITY, e.entity_id) for e in warmup]
                if not wait_until(lambda: watch.done(warm_keys), timeout=60) or watch.error:
                    raise RuntimeError(
                        f"the warm-up changes were not tombstoned ({watch.error or 'timeout'})"
                    )

            with (
                ctx.console.status(f"invalidation: {count:,} changes at {rate:,}/s..."),
                contextlib.ExitStack() as stack,
            ):
                if ctx.profile_dir is not None:
                    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
                    path = ctx.profile_dir / f"{stamp}-invalidation-worker.svg"
                    recording = stack.enter_context(profiled(worker.pid, path))
                due_at, took = _publish_paced(publisher, topic, count, rate)
                left = publisher.flush(60)
                if left:
                    raise RuntimeError(f"{left} changes were not delivered to Kafka")
                keys = list(due_at)
                done = wait_until(lambda: watch.done(keys), timeout=60)
        if watch.error is not None:
            raise RuntimeError(f"the tombstone watch failed: {watch.error}") from watch.error
        if not done:
            raise RuntimeError(f"{watch.count(keys)} of {count} changes were tombstoned")
        if acks.failed:
            raise RuntimeError(f"{acks.failed} changes failed to reach Kafka")
        if watch.missing_tombstones:
            raise RuntimeError(
                f"{len(watch.missing_tombstones)} keys were announced without their tombstone, "
                f"e.g. {watch.missing_tombstones[0]}"
            )
    finally:
        publisher.close(10)
        worker_exit = stop_process(worker)
    latencies, to_ack, after_ack = [], [], []
    for key, (kafka_key, due) in due_at.items():
        seen, acked = watch.seen(key) or 0.0, acks.at(kafka_key) or 0.0
        latencies.append((seen - due) * 1000)
        to_ack.append((acked - due) * 1000)
        after_ack.append((seen - acked) * 1000)
    note = f"{count:,} changes, one fresh key each; seen on the L1 eviction channel"
    if worker_exit:
        note += f"; worker exit code {worker_exit}"
    figures = [
        Figure(
            SECTION,
            "offered load",
            count / took,
            "events/s",
            float(rate),
            "target rate",
            note=f"{count:,} EntityChanged over {took:.1f} s",
        ),
        Figure(
            SECTION,
            "EntityChanged → key tombstoned p50",
            percentile(latencies, 0.5),
            "ms",
            note=note,
        ),
        Figure(
            SECTION,
            "EntityChanged → key tombstoned p99",
            percentile(latencies, 0.99),
            "ms",
            target=Target("<=", 100, on="value"),
            note=f"max {max(latencies):.1f} ms; worker batch max wait 20 ms",
        ),
        # Where the time goes: the publisher's side (producer linger, the broker's append
        # and ack) and what remains after the ack, a lower bound on the consumer's share
        # (the record was fetchable once appended, a little before our ack arrived).
        Figure(
            SECTION,
            "publish → Kafka ack p99",
            percentile(to_ack, 0.99),
            "ms",
            note=f"p50 {percentile(to_ack, 0.5):.1f} ms; producer linger.ms "
            f"{ctx.settings.linger_ms}",
        ),
        Figure(
            SECTION,
            "Kafka ack → key tombstoned p99",
            percentile(after_ack, 0.99),
            "ms",
            note=f"p50 {percentile(after_ack, 0.5):.1f} ms; fetch, batch, Redis, pub/sub",
        ),
    ]
    if recording is not None:
        figures.append(
            Figure(
                SECTION,
                "invalidation worker flame graph (py-spy, paced load)",
                recording.seconds,
                "s",
                note=str(recording.path) if recording.path else recording.problem,
            )
        )
    return figures
