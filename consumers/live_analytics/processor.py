"""What happens to each event: count it, move the partition's clock, close final windows.

For an event on source partition ``p`` (inside the faust agent, one event at a time):

1. **filter** — records this process already saw (same offset again), undecodable values,
   other event types, records not keyed by their tenant, and *late* events (their minute
   on ``p`` is already final) are counted in ``sidestream_live_events_skipped_total`` and
   left out;
2. **count** — +1 in its one-minute and five-minute windows (tenant x event type) and its
   one-minute action window (tenant x action);
3. **advance** — the *watermark* of ``p`` moves: the event time of the slowest source topic
   on ``p`` that still has records to read (see `windows`); when that makes windows final
   (`windows.closed_through`), they are **closed**, in this order:
   a. the spike detector checks each closed minute of each tenant, oldest first;
   b. the final counts are upserted into Postgres (absolute values, one transaction);
   c. alerts are sent to the alerts topic;
   d. the closed windows are deleted from the tables, the tenants' histories and the
      partition's clock are written (all through the changelog).

Offsets are committed by faust (``at_least_once``) every ``commit_interval_s``, after it
flushed the changelog writes. A graceful stop (SIGTERM) finishes the event in hand, flushes
and commits: nothing is counted twice. A crash between a commit and the next replays the
events since, so windows still open at the crash count those events twice. A window written at
step b and replayed is written again, with the same or a higher count: live counts are at
least once, ``analytics_hourly`` is the exact figure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from faust.types import EventT

from consumers.live_analytics.codec import Undecodable
from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from consumers.live_analytics.snapshot import SnapshotWriter, WindowCount
from consumers.live_analytics.spikes import SpikeRule, history_from_json, history_to_json
from consumers.live_analytics.tables import COUNT_WINDOWS, LiveTables, StreamClock
from consumers.live_analytics.windows import TUMBLING_1M, closed_through, minute_of
from schemas import AnalyticsAlert, AnalyticsEvent, AuditEvent

__all__ = ["LiveProcessor"]

logger = logging.getLogger(__name__)


class LiveProcessor:
    """The per-event logic of the agent; every resource is injected."""

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
        highwater: Callable[[str, int], int | None],
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
        self._highwater = highwater
        self._last_offsets: dict[tuple[str, int], int] = {}
        self._source_times: dict[tuple[str, int], float] = {}

    async def process(self, event: EventT[Any]) -> None:
        """Count one event from the source topics; close what it makes final."""
        value = event.value
        message = event.message
        source = (message.topic, message.partition)
        last = self._last_offsets.get(source)
        if last is not None and message.offset <= last:
            # faust lets a record through again when it arrives a second time with the
            # offset it read last (its filter is `offset >= last read`); seen here with the
            # last record of each partition once the consumer had caught up.
            self._metrics.skipped.labels("redelivered").inc()
            return
        self._last_offsets[source] = message.offset
        if isinstance(value, Undecodable):
            self._metrics.skipped.labels("undecodable").inc()
            logger.warning(
                "undecodable record %s[%d]@%d: %s",
                message.topic,
                message.partition,
                message.offset,
                value.message,
            )
            return
        if not isinstance(value, AnalyticsEvent | AuditEvent):
            self._metrics.skipped.labels("unsupported_event").inc()
            return
        if message.key != value.key:
            # Another key may put the tenant's events on several partitions, and two
            # partial windows would overwrite each other's row in Postgres.
            self._metrics.skipped.labels("not_keyed_by_tenant").inc()
            return
        partition = message.partition
        timestamp = value.occurred_at.timestamp()
        clock = self._tables.clock(partition)
        if clock is None:
            # Nothing is final yet: the other source topics may still bring older events.
            clock = StreamClock(since=minute_of(timestamp), stream_time=timestamp, closed=0.0)
            self._tables.advance(partition, clock, persist=False)
        elif timestamp < clock.closed:
            self._metrics.skipped.labels("late").inc()
            return
        self._tables.count(event, value)
        self.counted += 1
        self._metrics.events.labels(message.topic).inc()
        if timestamp > self._source_times.get(source, -math.inf):
            self._source_times[source] = timestamp
        if minute_of(timestamp) < clock.since:
            # Within the grace of the first event: the partition's stream starts earlier.
            clock = dataclasses.replace(clock, since=minute_of(timestamp))
        if timestamp > clock.stream_time:
            clock = dataclasses.replace(clock, stream_time=timestamp)
            self._metrics.stream_time.labels(str(partition)).set(timestamp)
        watermark = self._watermark(partition)
        closed = -math.inf if watermark is None else closed_through(watermark, self._grace_s)
        if closed > clock.closed:
            await self._close(partition, clock, closed)
        else:
            self._tables.advance(partition, clock, persist=False)

    def _watermark(self, partition: int) -> float | None:
        """How far event time has certainly got on `partition`, or None if unknown.

        faust reads the source topics side by side, not merged by event time: during a
        catch-up one can run minutes ahead of another. So the watermark is the event time of
        the slowest source that still has records to read; sources that are caught up (or
        empty) do not hold it back, and when all are, it is the newest event time seen.
        """
        behind: list[float] = []
        seen: list[float] = []
        for topic in self._sources:
            source = (topic, partition)
            time = self._source_times.get(source)
            if time is not None:
                seen.append(time)
            highwater = self._highwater(topic, partition)
            last = self._last_offsets.get(source)
            if highwater is None:
                if last is None:
                    return None  # never fetched: its events may all be older
                continue
            if (-1 if last is None else last) + 1 < highwater:
                if time is None:
                    return None  # records waiting, none read yet
                behind.append(time)
        if behind:
            return min(behind)
        return max(seen) if seen else None

    async def _close(self, partition: int, clock: StreamClock, closed: float) -> None:
        rows: list[WindowCount] = []
        finals = {
            spec: self._tables.final_windows(spec, partition, closed) for spec in COUNT_WINDOWS
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
        # b. Final counts (a thread: psycopg's pool is synchronous; the agent waits).
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
        # d. Forget what is final, remember the histories and the clock.
        for spec, windows in finals.items():
            for key, _ in windows:
                self._tables.delete(spec, partition, key)
            self._metrics.windows_closed.labels(spec.name).inc(len(windows))
        for key, _ in self._tables.final_windows(None, partition, closed):
            self._tables.delete(None, partition, key)
        for tenant, history in histories.items():
            self._tables.history[tenant] = history_to_json(history)
        self._tables.advance(partition, dataclasses.replace(clock, closed=closed), persist=True)
        logger.debug(
            "partition %d: windows ending by %.0f closed, %d rows, %d alerts",
            partition,
            closed,
            len(rows),
            len(alerts),
        )
