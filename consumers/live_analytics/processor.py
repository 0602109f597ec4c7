"""What happens to each micro-batch of events: count them, move the clocks, close windows.

The consumer hands the source records over a fetch at a time, in micro-batches of up to
`batch_max` records (`_transport.BatchDelivery`, not through faust's agents: their
per-record path cost more than all the counting). For a batch:

1. **decode and filter** — per event, in order: records this process already saw (same
   offset again), undecodable values (records arrive as raw bytes and are decoded here),
   other event types, records not keyed by their tenant, and *late* events (their minute
   on the event's partition is already final) are counted in
   ``sidestream_live_events_skipped_total`` and left out;
2. **count** — the batch's events are summed in memory per partition, tenant x event type
   x minute (and tenant x action x minute), then each one-minute window is written **once
   per batch** (old count + the batch's); the five-minute hopping windows are not stored:
   they are sums of five one-minute windows (`LiveTables`);
3. **advance** — for each partition of the batch, the *watermark* moves: the event time of
   the slowest source topic on it that still has records to read (see `windows`); when that
   makes windows final (`windows.closed_through`), they are **closed**, in this order:
   a. the spike detector checks each closed minute of each tenant, oldest first;
   b. the final counts (one-minute and five-minute) are upserted into Postgres (absolute
      values, one transaction);
   c. alerts are sent to the alerts topic;
   d. windows no open window needs are deleted from the tables (a one-minute window stays
      until the last five-minute window holding it is final), the tenants' histories and
      the partition's clock are written (all through the changelog).

A window closes at the end of the batch that made it final, so an event is late only if its
minute was already final before its batch; a batch never spans more than `batch_max` events.

Offsets are committed by faust (``at_least_once``) every ``commit_interval_s``, after it
flushed the producer; records are acknowledged once their batch is processed and its
changelog records are handed to the producer, and nothing else acknowledges them (see
``count_fetched`` in `app`). A rebalance waits for the batch in hand to be acknowledged
before it commits. A worker given partitions (at its start or in a rebalance) restores the
tables, then reads from the committed offsets on and counts each record from there once
(see ``_Consumer.perform_seek`` in `_transport`). A graceful stop (SIGTERM) lets the batch
in hand finish, hands over no more, then faust flushes and commits: nothing is counted
twice, nothing is skipped. A crash between a commit
and the next replays the events since, so windows still open at the crash count those
events twice. A window written at step b and replayed is written again, with the same or a
higher count: live counts are at least once, ``analytics_hourly`` is the exact figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from faust.types import Message

from consumers.live_analytics.codec import Undecodable
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from consumers.live_analytics.snapshot import SnapshotWriter, WindowCount
from consumers.live_analytics.spikes import SpikeRule, history_from_json, history_to_json
from consumers.live_analytics.tables import LiveTables, StreamClock, action_of
from consumers.live_analytics.windows import HOPPING_5M, TUMBLING_1M, closed_through, minute_of
from schemas import AnalyticsAlert, AnalyticsEvent, AuditEvent, Event

__all__ = ["LiveProcessor"]

logger = logging.getLogger(__name__)


class LiveProcessor:
    """The per-batch logic of the worker; every resource is injected."""

    def __init__(
        self,
        *,
        tables: LiveTables,
        writer: SnapshotWriter,
        alerts: Any,
        rule: SpikeRule,
        grace_s: float,
        producer: str,
        metrics: LiveAnalyticsMetrics,
        stop: threading.Event,
        sources: tuple[str, ...],
        decode: Callable[[object], Event | Undecodable],
        highwater: Callable[[str, int], int | None],
        source_idle_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tables = tables
        self._writer = writer
        self._alerts = alerts
        self._rule = rule
        self._grace_s = grace_s
        self._producer = producer
        self._metrics = metrics
        self._stop = stop
        self.counted = 0
        """Events counted into the windows by this process."""
        self._sources = sources
        self._decode = decode
        self._highwater = highwater
        self._last_offsets: dict[tuple[str, int], int] = {}
        self._source_times: dict[tuple[str, int], float] = {}
        self._source_idle_s = source_idle_s
        self._clock = clock
        self._resumed_at: dict[int, float] = {}
        self._lock: asyncio.Lock | None = None

    def resumed(self, partitions: set[int]) -> None:
        """Records of `partitions` are handed over from now on (tables restored)."""
        now = self._clock()
        self._resumed_at = {p: self._resumed_at.get(p, now) for p in partitions}

    def revoked(self) -> None:
        """A rebalance began: forget when partitions were resumed."""
        self._resumed_at.clear()

    def _guard(self) -> asyncio.Lock:
        # Created in the running loop on first use: the batches and the idle check take turns.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def close_idle(self) -> None:
        """Close what has become final without a new event (called on a timer): a source
        that stayed silent past `source_idle_s` stops holding a partition's watermark back,
        and no event may come to notice it."""
        async with self._guard():
            for partition in sorted(self._resumed_at):
                clock = self._tables.clock(partition)
                watermark = None if clock is None else self._watermark(partition)
                if clock is None or watermark is None:
                    continue
                closed = closed_through(watermark, self._grace_s)
                if closed > clock.closed:
                    await self._close(partition, clock, closed)
            await self._tables.flush_changelog()

    async def process_batch(self, records: Sequence[Message]) -> None:
        """Count a micro-batch of events from the source topics; close what it makes final."""
        async with self._guard():
            await self._process_batch(records)
            # Before the caller acknowledges the events (see `LiveTables.flush_changelog`).
            await self._tables.flush_changelog()

    async def _process_batch(self, records: Sequence[Message]) -> None:
        counts: defaultdict[int, Counter[tuple[str, str, float]]] = defaultdict(Counter)
        actions: defaultdict[int, Counter[tuple[str, str, float]]] = defaultdict(Counter)
        tenants: defaultdict[int, set[str]] = defaultdict(set)
        per_topic: Counter[str] = Counter()
        # Per partition of the batch: (earliest minute, latest event time) counted.
        spans: dict[int, tuple[float, float]] = {}
        skipped = self._metrics.skipped
        decode = self._decode
        for message in records:
            source = (message.topic, message.partition)
            last = self._last_offsets.get(source)
            if last is not None and message.offset <= last:
                # faust lets a record through again when it arrives a second time with the
                # offset it read last (its filter is `offset >= last read`); seen here with
                # the last record of each partition once the consumer had caught up.
                skipped.labels("redelivered").inc()
                continue
            self._last_offsets[source] = message.offset
            value = decode(message.value)
            if isinstance(value, Undecodable):
                skipped.labels("undecodable").inc()
                logger.warning(
                    "undecodable record %s[%d]@%d: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    value.message,
                )
                continue
            if not isinstance(value, AnalyticsEvent | AuditEvent):
                skipped.labels("unsupported_event").inc()
                continue
            if message.key != value.key:
                # Another key may put the tenant's events on several partitions, and two
                # partial windows would overwrite each other's row in Postgres.
                skipped.labels("not_keyed_by_tenant").inc()
                continue
            partition = message.partition
            timestamp = value.occurred_at.timestamp()
            clock = self._tables.clock(partition)
            if clock is not None and timestamp < clock.closed:
                skipped.labels("late").inc()
                continue
            minute = minute_of(timestamp)
            tenant = value.tenant_id
            counts[partition][(tenant, value.event_type, minute)] += 1
            actions[partition][(tenant, action_of(value), minute)] += 1
            tenants[partition].add(tenant)
            per_topic[message.topic] += 1
            span = spans.get(partition)
            spans[partition] = (
                (minute, timestamp)
                if span is None
                else (min(span[0], minute), max(span[1], timestamp))
            )
            if timestamp > self._source_times.get(source, -math.inf):
                self._source_times[source] = timestamp
        for partition, (first_minute, latest) in spans.items():
            self._tables.add_counts(
                partition, counts[partition], actions[partition], tenants[partition]
            )
            clock = self._tables.clock(partition)
            if clock is None:
                # Nothing is final yet: the other source topics may still bring older events.
                clock = StreamClock(since=first_minute, stream_time=latest, closed=0.0)
            if first_minute < clock.since:
                # Within the grace of the first event: the partition's stream starts earlier.
                clock = dataclasses.replace(clock, since=first_minute)
            if latest > clock.stream_time:
                clock = dataclasses.replace(clock, stream_time=latest)
                self._metrics.stream_time.labels(str(partition)).set(latest)
            watermark = self._watermark(partition)
            closed = -math.inf if watermark is None else closed_through(watermark, self._grace_s)
            if closed > clock.closed:
                await self._close(partition, clock, closed)
            else:
                self._tables.advance(partition, clock, persist=False)
        # Counted once every partition's counts are in the tables: closing windows awaits
        # Postgres, and a reader (web view, metric watcher) runs in between; had the metric
        # moved first, it could say "counted" while a later partition's counts were not in.
        for topic, n in per_topic.items():
            self._metrics.events.labels(topic).inc(n)
            self.counted += n

    def _watermark(self, partition: int) -> float | None:
        """How far event time has certainly got on `partition`, or None if unknown.

        faust reads the source topics side by side, not merged by event time: during a
        catch-up one can run minutes ahead of another. So the watermark is the event time of
        the slowest source that still has records to read; sources that are caught up (or
        empty) do not hold it back, and when all are, it is the newest event time seen.

        A source that delivered nothing to this process yet holds it back for
        `source_idle_s` after the worker resumed (its records may all be older); silent
        longer, it is caught up. A restarted worker whose predecessor read one source of a
        partition to its end would otherwise wait for that source forever (the end offset
        is no help: this process read nothing of it, and the local broker sends no end
        offset for a partition read to its end).
        """
        behind: list[float] = []
        seen: list[float] = []
        for topic in self._sources:
            source = (topic, partition)
            latest = self._source_times.get(source)
            if latest is not None:
                seen.append(latest)
            last = self._last_offsets.get(source)
            highwater = self._highwater(topic, partition)
            if last is None:
                if highwater == 0:
                    continue  # an empty partition
                resumed = self._resumed_at.get(partition)
                if resumed is None or self._clock() - resumed < self._source_idle_s:
                    return None  # nothing fetched yet: its events may all be older
                continue  # silent since the worker resumed: caught up
            if highwater is not None and last + 1 < highwater:
                if latest is None:
                    return None  # records waiting, none counted yet
                behind.append(latest)
        if behind:
            return min(behind)
        return max(seen) if seen else None

    async def _close(self, partition: int, clock: StreamClock, closed: float) -> None:
        rows: list[WindowCount] = []
        finals = {
            spec: self._tables.final_windows(spec, partition, clock.closed, closed)
            for spec in (TUMBLING_1M, HOPPING_5M)
        }
        minutes: defaultdict[float, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        for spec, windows in finals.items():
            for ((tenant, name), (start, _)), count in windows:
                if count:
                    rows.append(WindowCount(spec.size_s, start, tenant, name, count))
                    if spec is TUMBLING_1M:
                        minutes[start][tenant] += count
        # a. Spikes, oldest minute first: a minute's total joins the history the next
        #    minute is compared with.
        alerts: list[AnalyticsAlert] = []
        histories: dict[str, dict[float, int]] = {}
        for minute in sorted(minutes):
            for tenant, total in sorted(minutes[minute].items()):
                history = histories.get(tenant)
                if history is None:
                    history = histories[tenant] = history_from_json(
                        self._tables.history.data.get(tenant)
                    )
                alert = self._rule.check(
                    tenant_id=tenant,
                    window_start=minute,
                    count=total,
                    history=history,
                    observed_since=clock.since,
                    producer=self._producer,
                )
                if alert is not None:
                    alerts.append(alert)
                self._rule.record(history, minute, total)
        # b. Final counts (a thread: psycopg's pool is synchronous; the batch waits).
        await asyncio.to_thread(self._writer.write, rows, stop=self._stop)
        # c. Alerts: delivered before faust commits the offsets (it flushes the producer).
        for alert in alerts:
            await self._alerts.send(key=alert.key, value=alert)
            self._metrics.alerts.labels(alert.rule).inc()
            logger.info(
                "alert %s %s: tenant %s, %d events at %s (baseline %.2f/min)",
                alert.rule,
                alert.event_id,
                alert.tenant_id,
                alert.observed_count,
                alert.window_start.isoformat(),
                alert.baseline_mean,
            )
        # d. Forget what no open window needs, remember the histories and the clock.
        for spec, windows in finals.items():
            self._metrics.windows_closed.labels(spec.name).inc(len(windows))
        self._tables.forget_final(partition, closed)
        for tenant, history in histories.items():
            self._tables.put_history(partition, tenant, history_to_json(history))
        self._tables.advance(partition, dataclasses.replace(clock, closed=closed), persist=True)
        logger.debug(
            "partition %d: windows ending by %.0f closed, %d rows, %d alerts",
            partition,
            closed,
            len(rows),
            len(alerts),
        )
