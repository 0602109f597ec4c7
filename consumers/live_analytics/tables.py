"""The worker's faust tables, and an index of the windows they hold.

Tables (all changelog-backed: every change is also written to
``<app id>-<table>-changelog``, and a worker that takes a partition over rebuilds the
table from there):

- ``counts-1m`` / ``counts-5m``: windowed tables (faust's tumbling and hopping windows,
  relative to the event's ``occurred_at``), ``(tenant, event type) -> events``;
- ``actions-1m``: tumbling one-minute windows, ``(tenant, action) -> events``, for the
  top-N view (an action is an audit event's ``action`` or an analytics event's ``name``);
- ``stream-time``: per source partition, its `StreamClock`;
- ``spike-history``: per tenant, its recent one-minute totals (for the spike detector);
- ``tenant-partitions``: per tenant, the source partition its events arrive on.

Every table is partitioned like the source topics, and each write goes to the partition
of the event being processed: the sources are keyed by tenant, so all of a tenant's
windows live on its partition.

faust's tables cannot list their keys by partition, so `LiveTables` keeps an index of the
window keys it holds per partition and tenant: filled when an event is counted, and
rebuilt from the restored tables after every rebalance (`rebuild_index`), which works the
same with the in-memory store and with RocksDB (where a restart restores nothing from the
changelog that is already on disk).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import faust
from faust.types import EventT

from consumers.live_analytics.windows import HOPPING_5M, TUMBLING_1M, WindowSpec
from schemas import AnalyticsEvent, AuditEvent

__all__ = ["TABLE_NAMES", "LiveTables", "StreamClock", "WindowKey", "action_of"]

WindowKey = tuple[tuple[str, str], tuple[float, float]]
"""A windowed table's key as faust stores it: ``((tenant, name), (start, start+size-0.1))``."""

COUNT_WINDOWS: tuple[WindowSpec, ...] = (TUMBLING_1M, HOPPING_5M)
TABLE_NAMES = (
    "counts-1m",
    "counts-5m",
    "actions-1m",
    "stream-time",
    "spike-history",
    "tenant-partitions",
)
"""Names of the tables; each has a changelog topic ``<app id>-<name>-changelog``."""


def action_of(event: AnalyticsEvent | AuditEvent) -> str:
    """What the tenant's user did: an audit event's action, an analytics event's name."""
    return event.action if isinstance(event, AuditEvent) else event.name


def _event_time(event: EventT[Any] | None = None) -> datetime:
    """faust's time-relativity hook: windows follow ``occurred_at``, not the wall clock."""
    if event is None:
        raise RuntimeError("live windows are only updated while processing an event")
    value: Any = event.value
    return cast(datetime, value.occurred_at)


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


class LiveTables:
    """Declares the tables on `app` and answers questions about what they hold."""

    def __init__(self, app: faust.App, *, partitions: int) -> None:
        self.partitions = partitions
        self._indexes: dict[str, _KeyIndex] = {}
        self.counts: dict[WindowSpec, Any] = {}
        for spec in COUNT_WINDOWS:
            self.counts[spec] = self._windowed(app, f"counts-{spec.name}", spec)
        self.actions: Any = self._windowed(app, "actions-1m", TUMBLING_1M)
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

    def _windowed(self, app: faust.App, name: str, spec: WindowSpec) -> Any:
        self._indexes[name] = _KeyIndex()
        table = app.Table(
            name,
            default=int,
            partitions=self.partitions,
            value_type=int,
            help=f"events by (tenant, name) in {spec.size_s} s windows of event time",
        )
        # No `expires`: faust would expire windows by the wall clock. Windows close on
        # event time, in `LiveProcessor`, which deletes them once written.
        wrapper: Any = table.using_window(spec.faust_window())
        return wrapper.relative_to(_event_time)

    # --- counting (inside stream processing) -----------------------------------------

    def count(self, event: EventT[Any], value: AnalyticsEvent | AuditEvent) -> None:
        """Count `value` into every window it falls in (inside the agent, for `event`)."""
        partition = event.message.partition
        timestamp = value.occurred_at.timestamp()
        tenant = value.tenant_id
        if self._partition_of.get(tenant) != partition:
            self._partition_of[tenant] = partition
            self.tenant_partitions[tenant] = partition
        for spec, wrapper in self.counts.items():
            self._increment(
                f"counts-{spec.name}", wrapper, partition, (tenant, value.event_type), timestamp
            )
        self._increment(
            "actions-1m", self.actions, partition, (tenant, action_of(value)), timestamp
        )

    def _increment(
        self, name: str, wrapper: Any, partition: int, key: tuple[str, str], timestamp: float
    ) -> None:
        wrapper[key] += 1
        index = self._indexes[name]
        for window_range in wrapper.table.window.ranges(timestamp):
            index.add(partition, (key, (float(window_range[0]), float(window_range[1]))))

    def rebuild_index(self) -> None:
        """Re-read which windows the restored tables hold (after a rebalance, before the
        agent resumes): the tenants' partitions first, then every window key."""
        self._partition_of = {
            str(tenant): int(partition) for tenant, partition in self.tenant_partitions.data.items()
        }
        for name, table in self._tables_by_name().items():
            index = self._indexes[name]
            index.clear()
            for raw in list(table.data.keys()):
                key = _as_window_key(raw)
                partition = None if key is None else self._partition_of.get(key[0][0])
                if key is not None and partition is not None:
                    index.add(partition, key)

    def _tables_by_name(self) -> dict[str, Any]:
        tables = {f"counts-{spec.name}": wrapper.table for spec, wrapper in self.counts.items()}
        tables["actions-1m"] = self.actions.table
        return tables

    def final_windows(
        self, spec: WindowSpec | None, partition: int, closed: float
    ) -> list[tuple[WindowKey, int]]:
        """Windows of partition `partition` that end by `closed`, with their counts
        (`spec` None: the actions table)."""
        name = "actions-1m" if spec is None else f"counts-{spec.name}"
        size = TUMBLING_1M if spec is None else spec
        table = (self.actions if spec is None else self.counts[spec]).table
        found = []
        for key in self._indexes[name].of_partition(partition):
            if size.is_final(key[1][0], closed):
                found.append((key, int(table.data.get(key) or 0)))
        return found

    def delete(self, spec: WindowSpec | None, partition: int, key: WindowKey) -> None:
        """Forget a final window (inside the agent: faust writes the tombstone)."""
        name = "actions-1m" if spec is None else f"counts-{spec.name}"
        table = (self.actions if spec is None else self.counts[spec]).table
        if key in table:
            del table[key]
        self._indexes[name].discard(partition, key)

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
        """Remember `clock`; `persist` also writes it to the changelog (inside the agent)."""
        self._clocks[partition] = clock
        if persist:
            self.clocks[partition] = clock.to_json()

    def forget_clocks(self) -> None:
        """Drop the cached clocks (on a rebalance another worker may have moved them on)."""
        self._clocks.clear()

    # --- reading, for the web views --------------------------------------------------

    def tenants(self) -> dict[str, int]:
        """Every tenant with an open window, and its partition."""
        return self._indexes["counts-1m"].tenants()

    def partition_of(self, tenant: str) -> int | None:
        """The source partition `tenant`'s events arrive on, if it was seen."""
        return self._partition_of.get(tenant)

    def windows_of(self, spec: WindowSpec | None, tenant: str) -> dict[float, dict[str, int]]:
        """A tenant's open windows: start -> {name: events}."""
        name = "actions-1m" if spec is None else f"counts-{spec.name}"
        table = (self.actions if spec is None else self.counts[spec]).table
        partition = self._partition_of.get(tenant)
        windows: dict[float, dict[str, int]] = defaultdict(dict)
        if partition is None:
            return windows
        for key in self._indexes[name].of_tenant(partition, tenant):
            value = table.data.get(key)
            if value:
                windows[key[1][0]][key[0][1]] = int(value)
        return windows

    def current_start(self, spec: WindowSpec, partition: int) -> float | None:
        """Start of the window "now" (the partition's stream time) belongs to."""
        clock = self.clock(partition)
        if clock is None or not math.isfinite(clock.stream_time):
            return None
        return spec.latest_start(clock.stream_time)
