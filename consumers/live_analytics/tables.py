"""The worker's faust tables, and an index of the windows they hold.

Tables (all changelog-backed: every change is also written to
``<app id>-<table>-changelog``, and a worker that takes a partition over rebuilds the
table from there):

- ``counts-1m``: one-minute tumbling windows of event time (``occurred_at``),
  ``((tenant, event type), (start, start + 59.9)) -> events``, keyed as faust keys its
  windowed tables; the **five-minute hopping windows are sums of five of them**, computed
  when read or closed, so a one-minute window is kept until the last five-minute window
  that holds it is final;
- ``actions-1m``: one-minute windows, ``(tenant, action) -> events``, for the top-N view
  (an action is an audit event's ``action`` or an analytics event's ``name``);
- ``stream-time``: per source partition, its `StreamClock`;
- ``spike-history``: per tenant, its recent one-minute totals (for the spike detector);
- ``tenant-partitions``: per tenant, the source partition its events arrive on.

Every table is partitioned like the source topics, and each write goes to the changelog
partition of the source partition it belongs to (named explicitly: the processor writes a
micro-batch's counts once per key, outside faust's per-event context). The sources are
keyed by tenant, so all of a tenant's windows live on its partition.

faust's tables cannot list their keys by partition, so `LiveTables` keeps an index of the
window keys it holds per partition and tenant: filled when counts are added, and rebuilt
from the restored tables after every rebalance (`rebuild_index`), which works the same with
the in-memory store and with RocksDB (where a restart restores nothing from the changelog
that is already on disk).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import faust

from consumers.live_analytics.windows import HOPPING_5M, STEP_S, TUMBLING_1M, WindowSpec
from schemas import AnalyticsEvent, AuditEvent

__all__ = ["TABLE_NAMES", "LiveTables", "StreamClock", "WindowKey", "action_of"]

WindowKey = tuple[tuple[str, str], tuple[float, float]]
"""A window's key as faust keys windowed tables: ``((tenant, name), (start, start+size-0.1))``."""

MinuteCounts = Mapping[tuple[str, str, float], int]
"""Counts of one micro-batch on one partition: ``(tenant, name, minute start) -> events``."""

TABLE_NAMES = ("counts-1m", "actions-1m", "stream-time", "spike-history", "tenant-partitions")
"""Names of the tables; each has a changelog topic ``<app id>-<name>-changelog``."""

_COUNTS, _ACTIONS = "counts-1m", "actions-1m"
# A one-minute window is needed until the last five-minute window holding it is final.
_KEEP_S = HOPPING_5M.size_s - TUMBLING_1M.size_s


def action_of(event: AnalyticsEvent | AuditEvent) -> str:
    """What the tenant's user did: an audit event's action, an analytics event's name."""
    return event.action if isinstance(event, AuditEvent) else event.name


@functools.lru_cache(maxsize=4096)
def _minute_range(minute: float) -> tuple[float, float]:
    """faust's key range of the one-minute window starting at `minute` (same floats)."""
    start, end = TUMBLING_1M.faust_window().ranges(minute)[0]
    return float(start), float(end)


@dataclass(frozen=True, slots=True)
class StreamClock:
    """Event-time progress of one source partition.

    `stream_time` is the latest ``occurred_at`` seen; every window ending at or before
    `closed` is final and written; `since` is where the partition's stream began (the spike
    detector needs a whole baseline after it).
    """

    since: float
    stream_time: float
    closed: float

    def to_json(self) -> list[float]:
        return [self.since, self.stream_time, self.closed]

    @classmethod
    def from_json(cls, value: Any) -> StreamClock:
        since, stream_time, closed = (float(v) for v in value)
        return cls(since, stream_time, closed)


def _as_window_key(raw: Any) -> WindowKey | None:
    """A window key from a changelog record (JSON turns the tuples into lists)."""
    try:
        (tenant, name), (start, end) = raw
    except (TypeError, ValueError):
        return None
    return (str(tenant), str(name)), (float(start), float(end))


class _KeyIndex:
    """The window keys of one table, by source partition and tenant."""

    def __init__(self) -> None:
        self._keys: defaultdict[int, defaultdict[str, set[WindowKey]]] = defaultdict(
            lambda: defaultdict(set)
        )

    def add(self, partition: int, key: WindowKey) -> None:
        self._keys[partition][key[0][0]].add(key)

    def discard(self, partition: int, key: WindowKey) -> None:
        tenants = self._keys.get(partition)
        if tenants is None:
            return
        keys = tenants.get(key[0][0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del tenants[key[0][0]]

    def of_tenant(self, partition: int, tenant: str) -> set[WindowKey]:
        tenants = self._keys.get(partition)
        return set() if tenants is None else set(tenants.get(tenant, ()))

    def clear(self) -> None:
        self._keys.clear()

    def of_partition(self, partition: int) -> Iterator[WindowKey]:
        for keys in list(self._keys.get(partition, {}).values()):
            yield from list(keys)

    def tenants(self) -> dict[str, int]:
        return {
            tenant: partition for partition, tenants in self._keys.items() for tenant in tenants
        }


def _store_put(store: Any, partition: int, key: Any, value: Any) -> None:
    """Set `key` in a table's store, in the database of `partition` where there is one.

    The in-memory store is one mapping for every partition. faust's RocksDB store keeps a
    database per partition and takes the partition from the event being processed
    (``faust.streams.current_event``); the processor writes once per micro-batch, outside
    any event's context, so it names the partition (the store's own `_set`, with the
    partition given instead of looked up). Reads and deletes need no partition: the store
    finds the key in its databases.
    """
    db_for_partition = getattr(store, "_db_for_partition", None)
    if db_for_partition is None:
        store[key] = value
        return
    raw_key = store._encode_key(key)
    db_for_partition(partition).put(raw_key, store._encode_value(value))
    store._key_index[raw_key] = partition


class LiveTables:
    """Declares the tables on `app` and answers questions about what they hold.

    Writes name their changelog partition (`_put`, `_delete`): the processor changes the
    tables once per micro-batch, not inside faust's per-event processing. A write changes
    the table at once and queues its changelog record; `flush_changelog` sends the queued
    records, in order, straight to the producer — the processor calls it before the
    batch's records are acknowledged, so faust's commit (which flushes the producer first)
    never covers an event whose counts are not on their way to the changelog. (faust's own
    ``send_changelog`` goes through its producer buffer, a queue drained one record at a
    time that also stalls the fetcher whenever it holds more than 100 records: a third of
    the worker's time at a few thousand events/s.)
    """

    def __init__(self, app: faust.App, *, partitions: int) -> None:
        self.partitions = partitions
        self._indexes = {_COUNTS: _KeyIndex(), _ACTIONS: _KeyIndex()}
        self.counts: Any = self._windowed(app, _COUNTS, "(tenant, event type)")
        self.actions: Any = self._windowed(app, _ACTIONS, "(tenant, action)")
        self.clocks: Any = app.Table(
            "stream-time", partitions=partitions, key_type=int, help="StreamClock by partition"
        )
        self.history: Any = app.Table(
            "spike-history", partitions=partitions, help="recent 1-minute totals by tenant"
        )
        self.tenant_partitions: Any = app.Table(
            "tenant-partitions", partitions=partitions, help="source partition by tenant"
        )
        self._clocks: dict[int, StreamClock] = {}
        self._partition_of: dict[str, int] = {}
        self._changelog: list[Any] = []

    def _windowed(self, app: faust.App, name: str, what: str) -> Any:
        # No `expires`: faust would expire windows by the wall clock. Windows close on
        # event time, in `LiveProcessor`, which deletes them once no window needs them.
        return app.Table(
            name,
            default=int,
            partitions=self.partitions,
            value_type=int,
            help=f"events by {what} in one-minute windows of event time",
        )

    # --- writing (by the processor, one batch at a time) ------------------------------

    def _put(self, table: Any, partition: int, key: Any, value: Any) -> None:
        _store_put(table.data, partition, key, value)
        self._queue_changelog(table, partition, key, value, table.value_serializer)

    def _delete(self, table: Any, partition: int, key: Any) -> None:
        if key in table.data:
            del table.data[key]
            self._queue_changelog(table, partition, key, None, "raw")

    def _queue_changelog(
        self, table: Any, partition: int, key: Any, value: Any, value_serializer: Any
    ) -> None:
        # The record faust's `Collection.send_changelog` would hand to its producer buffer.
        self._changelog.append(
            table.changelog_topic.as_future_message(
                key=key,
                value=value,
                partition=partition,
                key_serializer=table.key_serializer,
                value_serializer=value_serializer,
                callback=table._on_changelog_sent,
                eager_partitioning=True,
            )
        )

    async def flush_changelog(self) -> None:
        """Hand the queued changelog records to the producer, in the order written.

        Returns once each is in the producer's batch for its partition (not once it is
        acknowledged: faust's commit flushes the producer before it commits offsets).
        """
        pending, self._changelog = self._changelog, []
        for future in pending:
            await future.message.channel.publish_message(future, wait=False)

    def add_counts(
        self, partition: int, counts: MinuteCounts, actions: MinuteCounts, tenants: set[str]
    ) -> None:
        """Add one micro-batch's counts of `partition`: each window key written once."""
        for tenant in tenants:
            if self._partition_of.get(tenant) != partition:
                self._partition_of[tenant] = partition
                self._put(self.tenant_partitions, partition, tenant, partition)
        for name, table, batch in (
            (_COUNTS, self.counts, counts),
            (_ACTIONS, self.actions, actions),
        ):
            index, data = self._indexes[name], table.data
            for (tenant, kind, minute), n in batch.items():
                key = ((tenant, kind), _minute_range(minute))
                self._put(table, partition, key, int(data.get(key) or 0) + n)
                index.add(partition, key)

    def rebuild_index(self) -> None:
        """Re-read which windows the restored tables hold (after a rebalance, before the
        batches resume): the tenants' partitions first, then every window key."""
        self._partition_of = {
            str(tenant): int(partition) for tenant, partition in self.tenant_partitions.data.items()
        }
        for name, table in ((_COUNTS, self.counts), (_ACTIONS, self.actions)):
            index = self._indexes[name]
            index.clear()
            for raw in list(table.data.keys()):
                key = _as_window_key(raw)
                partition = None if key is None else self._partition_of.get(key[0][0])
                if key is not None and partition is not None:
                    index.add(partition, key)

    def final_windows(
        self, spec: WindowSpec | None, partition: int, after: float, closed: float
    ) -> list[tuple[WindowKey, int]]:
        """Windows of `partition` (`spec` None: the action windows) that became final when
        the partition's closed-through instant moved from `after` to `closed`, with their
        counts; five-minute windows summed from the one-minute windows they hold."""
        if spec is None:
            return self._minute_windows(_ACTIONS, self.actions, partition, after, closed)
        if spec is TUMBLING_1M:
            return self._minute_windows(_COUNTS, self.counts, partition, after, closed)
        sums = self._sums(spec, self._indexes[_COUNTS].of_partition(partition))
        return [
            (key, count) for key, count in sums.items() if after < key[1][0] + spec.size_s <= closed
        ]

    def _minute_windows(
        self, name: str, table: Any, partition: int, after: float, closed: float
    ) -> list[tuple[WindowKey, int]]:
        found = []
        for key in self._indexes[name].of_partition(partition):
            if after < key[1][0] + TUMBLING_1M.size_s <= closed:
                found.append((key, int(table.data.get(key) or 0)))
        return found

    def _sums(self, spec: WindowSpec, keys: Iterator[WindowKey]) -> dict[WindowKey, int]:
        """The `spec` windows (of `size_s`, one every minute) holding the given one-minute
        windows, with the sums of their counts."""
        data = self.counts.data
        sums: defaultdict[WindowKey, int] = defaultdict(int)
        for key in keys:
            count = int(data.get(key) or 0)
            if not count:
                continue
            (tenant, kind), (minute, _end) = key
            for back in range(0, spec.size_s, STEP_S):
                start = minute - back
                sums[((tenant, kind), (start, start + spec.size_s - 0.1))] += count
        return dict(sums)

    def forget_final(self, partition: int, closed: float) -> int:
        """Delete the windows no open window needs any more (action windows once final,
        one-minute counts once the last five-minute window holding them is); how many."""
        deleted = 0
        for name, table, keep in ((_ACTIONS, self.actions, 0), (_COUNTS, self.counts, _KEEP_S)):
            index = self._indexes[name]
            for key in list(index.of_partition(partition)):
                if key[1][0] + TUMBLING_1M.size_s + keep <= closed:
                    self._delete(table, partition, key)
                    index.discard(partition, key)
                    deleted += 1
        return deleted

    def put_history(self, partition: int, tenant: str, history: Any) -> None:
        """Remember a tenant's spike history (by the processor)."""
        self._put(self.history, partition, tenant, history)

    # --- stream clocks ---------------------------------------------------------------

    def clock(self, partition: int) -> StreamClock | None:
        """The partition's clock: cached, else as restored from the changelog."""
        clock = self._clocks.get(partition)
        if clock is None:
            stored = self.clocks.data.get(partition)
            if stored is not None:
                clock = self._clocks[partition] = StreamClock.from_json(stored)
        return clock

    def advance(self, partition: int, clock: StreamClock, *, persist: bool) -> None:
        """Remember `clock`; `persist` also writes it to the changelog (by the processor)."""
        self._clocks[partition] = clock
        if persist:
            self._put(self.clocks, partition, partition, clock.to_json())

    def forget_clocks(self) -> None:
        """Drop the cached clocks (on a rebalance another worker may have moved them on)."""
        self._clocks.clear()

    # --- reading, for the web views --------------------------------------------------

    def tenants(self) -> dict[str, int]:
        """Every tenant with an open window, and its partition."""
        return {
            tenant: partition
            for tenant, partition in self._indexes[_COUNTS].tenants().items()
            if self.windows_of(TUMBLING_1M, tenant) or self.windows_of(HOPPING_5M, tenant)
        }

    def partition_of(self, tenant: str) -> int | None:
        """The source partition `tenant`'s events arrive on, if it was seen."""
        return self._partition_of.get(tenant)

    def windows_of(self, spec: WindowSpec | None, tenant: str) -> dict[float, dict[str, int]]:
        """A tenant's open windows: start -> {name: events}."""
        windows: dict[float, dict[str, int]] = defaultdict(dict)
        partition = self._partition_of.get(tenant)
        if partition is None:
            return windows
        clock = self.clock(partition)
        closed = -math.inf if clock is None else clock.closed
        name, table = (_ACTIONS, self.actions) if spec is None else (_COUNTS, self.counts)
        keys = self._indexes[name].of_tenant(partition, tenant)
        size = TUMBLING_1M.size_s if spec is None else spec.size_s
        if spec is None or spec is TUMBLING_1M:
            counts = {key: int(table.data.get(key) or 0) for key in keys}
        else:
            counts = self._sums(spec, iter(keys))
        for key, value in counts.items():
            if value and key[1][0] + size > closed:
                windows[key[1][0]][key[0][1]] = value
        return windows

    def current_start(self, spec: WindowSpec, partition: int) -> float | None:
        """Start of the window "now" (the partition's stream time) belongs to."""
        clock = self.clock(partition)
        if clock is None or not math.isfinite(clock.stream_time):
            return None
        return spec.latest_start(clock.stream_time)
