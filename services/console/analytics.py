"""The Analytics page's model: live window counts (``live_window_counts``, written by the
live analytics worker) per tenant and event type over time, recent spike alerts from the
alerts topic, and the history of ``make bench`` results (``bench/results/*.json``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from consumers.ops import TopicReader
from consumers.ops.positions import has_table
from schemas import AnalyticsAlert, EventDeserializer, SchemaError
from services.console.charts import Series

__all__ = ["BenchFigure", "bench_history", "live_counts", "recent_alerts"]

logger = logging.getLogger(__name__)


def live_counts(
    conn: psycopg.Connection[Any],
    schema: str,
    *,
    hours: float = 6.0,
    window_seconds: int = 60,
    tenants: int = 6,
) -> dict[str, list[Series]]:
    """The busiest ``tenants`` of the last ``hours``: per tenant, one series per event
    type of its window counts (x = window start)."""
    if not has_table(conn, schema, "live_window_counts"):
        return {}
    rows = conn.execute(
        """
        WITH recent AS (
            SELECT tenant_id, event_type, window_start, events FROM live_window_counts
             WHERE window_seconds = %(w)s
               AND window_start > now() - make_interval(secs => %(secs)s)),
        busiest AS (
            SELECT tenant_id FROM recent GROUP BY tenant_id
             ORDER BY sum(events) DESC, tenant_id LIMIT %(n)s)
        SELECT r.tenant_id, r.event_type, r.window_start, r.events
          FROM recent r JOIN busiest USING (tenant_id)
         ORDER BY r.tenant_id, r.event_type, r.window_start
        """,
        {"w": window_seconds, "secs": hours * 3600, "n": tenants},
    ).fetchall()
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for tenant, event_type, start, events in rows:
        points.setdefault(tenant, {}).setdefault(event_type, []).append(
            (start.timestamp(), float(events))
        )
    return {
        tenant: [Series(name, tuple(found)) for name, found in sorted(by_type.items())]
        for tenant, by_type in points.items()
    }


def recent_alerts(reader: TopicReader, topic: str, *, last: int = 50) -> list[AnalyticsAlert]:
    """The last ``last`` alerts of each partition of ``topic``, newest first."""
    keys = [(topic, p) for p in reader.partitions(topic)]
    ends = reader.ends(keys)
    deserializer = EventDeserializer()
    found = []
    for message in reader.scan({k: (max(e.low, e.end - last), e.end) for k, e in ends.items()}):
        try:
            event = deserializer.deserialize(message.value() or b"", topic)
        except SchemaError as exc:
            logger.warning(
                "skipping %s[%s]@%s: %s", topic, message.partition(), message.offset(), exc
            )
            continue
        if isinstance(event, AnalyticsAlert):
            found.append(event)
    return sorted(found, key=lambda a: a.occurred_at, reverse=True)[:last]


@dataclass(frozen=True, slots=True)
class BenchFigure:
    """One scoreboard figure across ``make bench`` runs (oldest first)."""

    section: str
    name: str
    unit: str
    series: Series
    latest_passed: bool | None
    target: str | None

    @property
    def change(self) -> float | None:
        """The latest value over the one before (1.0: unchanged)."""
        points = self.series.points
        if len(points) < 2 or points[-2][1] == 0:
            return None
        return points[-1][1] / points[-2][1]


def _runs(directory: Path, include_quick: bool) -> Iterable[tuple[float, dict[str, Any]]]:
    for path in sorted(directory.glob("*.json")):
        try:
            run = json.loads(path.read_text())
            when = datetime.strptime(run["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("skipping bench result %s: %s", path.name, exc)
            continue
        if run.get("quick") and not include_quick:
            continue
        yield when.timestamp(), run


def bench_history(directory: Path | None, *, include_quick: bool = False) -> list[BenchFigure]:
    """Every figure of the results in ``directory`` as a series over the runs' times."""
    if directory is None or not directory.is_dir():
        return []
    series: dict[tuple[str, str], list[tuple[float, float]]] = {}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for when, run in _runs(directory, include_quick):
        for figure in run.get("figures", []):
            value = figure.get("value")
            if not isinstance(value, int | float):
                continue
            key = (str(figure.get("section", "?")), str(figure.get("name", "?")))
            series.setdefault(key, []).append((when, float(value)))
            last[key] = figure
    return [
        BenchFigure(
            section=key[0],
            name=key[1],
            unit=str(last[key].get("unit", "")),
            series=Series(key[1], tuple(points)),
            latest_passed=last[key].get("passed"),
            target=last[key].get("target"),
        )
        for key, points in sorted(series.items())
    ]
