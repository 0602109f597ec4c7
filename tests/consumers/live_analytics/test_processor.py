"""The processor's per-batch logic, without servers: faust tables in memory, fakes at the edges.

Only what does not depend on Kafka or Postgres behaviour is checked here; the worker's
end-to-end behaviour is in `test_live_windows` and `test_restart`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import faust
from prometheus_client import CollectorRegistry

from consumers.live_analytics.metrics import LiveAnalyticsMetrics
from consumers.live_analytics.processor import LiveProcessor
from consumers.live_analytics.snapshot import SnapshotWriter, WindowCount
from consumers.live_analytics.spikes import SpikeRule
from consumers.live_analytics.tables import LiveTables
from consumers.live_analytics.windows import TUMBLING_1M
from schemas import AnalyticsEvent
from tests.consumers.live_analytics.support import analytics, at

SOURCE = "source"


class _ObservingWriter:
    """Stands in for the Postgres writer; notes what a reader sees while a window closes
    (the processor awaits the write, so the web views and metric watchers run then)."""

    def __init__(self, look: Any) -> None:
        self._look = look
        self.seen: list[Any] = []

    def write(self, rows: Sequence[WindowCount], *, stop: threading.Event) -> None:
        self.seen.append(self._look())


def _tables() -> LiveTables:
    app = faust.App(f"test-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1")
    tables = LiveTables(app, partitions=2)

    async def nothing_to_send() -> None:
        return None

    # No producer here: the changelog records are what the restart tests check.
    tables.flush_changelog = nothing_to_send  # type: ignore[method-assign]
    return tables


def _record(partition: int, event: AnalyticsEvent) -> Any:
    return SimpleNamespace(topic=SOURCE, partition=partition, offset=0, key=event.key, value=event)


def test_events_are_reported_counted_only_once_every_partitions_counts_are_in_the_tables() -> None:
    # The race CI once lost: the first partition's windows closed (awaiting Postgres), a
    # reader saw "2 events counted" and found the second tenant with no one-minute window.
    tables = _tables()
    registry = CollectorRegistry()

    def look() -> tuple[float, bool]:
        counted = registry.get_sample_value("sidestream_live_events_total", {"topic": SOURCE})
        return counted or 0.0, bool(tables.windows_of(TUMBLING_1M, "globex"))

    writer = _ObservingWriter(look)
    processor = LiveProcessor(
        tables=tables,
        writer=cast(SnapshotWriter, writer),
        alerts=None,
        rule=SpikeRule(),
        grace_s=0,
        producer="tests",
        metrics=LiveAnalyticsMetrics(registry),
        stop=threading.Event(),
        sources=(SOURCE,),
        decode=lambda value: cast(AnalyticsEvent, value),
        highwater=lambda _topic, _partition: 1,
    )
    batch = [
        _record(0, analytics("acme", "click", at(1))),
        _record(1, analytics("globex", "click", at(1))),
    ]

    asyncio.run(processor.process_batch(batch))

    assert len(writer.seen) == 2  # both partitions closed something, awaiting the writer
    for counted, globex_visible in writer.seen:
        assert counted == 0 or globex_visible, writer.seen
    assert look() == (2.0, True)
    assert processor.counted == 2
