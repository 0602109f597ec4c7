"""The JSON views served by faust's web server, built from the live tables.

- ``GET /live/tenants/`` — tenants with open windows on this worker, and their partition;
- ``GET /live/tenants/{tenant}/`` — the tenant's current windows (the one-minute window and
  the five-minute window that hold the partition's stream time) and its top actions;
- ``GET /live/tenants/{tenant}/windows/`` — every open window of the tenant;
- ``GET /live/tenants/{tenant}/top/?n=5`` — the top-N actions in the current minute;
- ``GET /live/partitions/`` — stream time and closed-through instant of each partition.

A worker answers for the partitions it holds: a tenant held by another worker is a 404
(its key is hashed by the producers' partitioner, which faust's router does not share).
Times are ISO 8601 (UTC); windows are ``[start, end)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.live_analytics.tables import LiveTables
from consumers.live_analytics.windows import HOPPING_5M, TUMBLING_1M, WindowSpec
from runtime.times import utc_text

__all__ = ["partitions_view", "tenant_view", "tenant_windows_view", "tenants_view", "top_view"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(seconds: float) -> str:
    return utc_text(_EPOCH + timedelta(seconds=seconds))


def _window(spec: WindowSpec, start: float, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "window": spec.name,
        "start": _iso(start),
        "end": _iso(start + spec.size_s),
        "counts": dict(sorted(counts.items())),
        "total": sum(counts.values()),
    }


def tenants_view(tables: LiveTables, assigned: set[int]) -> dict[str, Any]:
    tenants = {t: p for t, p in sorted(tables.tenants().items()) if p in assigned}
    return {"tenants": [{"tenant": t, "partition": p} for t, p in tenants.items()]}


def _partition(tables: LiveTables, tenant: str, assigned: set[int]) -> int | None:
    partition = tables.partition_of(tenant)
    return partition if partition in assigned else None


def _top(tables: LiveTables, tenant: str, start: float | None, n: int) -> list[dict[str, Any]]:
    if start is None:
        return []
    actions = tables.windows_of(None, tenant).get(start, {})
    ranked = sorted(actions.items(), key=lambda item: (-item[1], item[0]))[:n]
    return [{"action": action, "count": count} for action, count in ranked]


def tenant_view(
    tables: LiveTables, tenant: str, assigned: set[int], *, top_n: int
) -> dict[str, Any] | None:
    """The tenant's current windows and top actions; None when not held here."""
    partition = _partition(tables, tenant, assigned)
    if partition is None:
        return None
    clock = tables.clock(partition)
    current: dict[str, Any] = {}
    for spec in (TUMBLING_1M, HOPPING_5M):
        start = tables.current_start(spec, partition)
        if start is not None:
            current[spec.name] = _window(
                spec, start, tables.windows_of(spec, tenant).get(start, {})
            )
    minute = tables.current_start(TUMBLING_1M, partition)
    return {
        "tenant": tenant,
        "partition": partition,
        "stream_time": None if clock is None else _iso(clock.stream_time),
        "closed_through": None if clock is None or clock.closed <= 0 else _iso(clock.closed),
        "current": current,
        "top_actions": _top(tables, tenant, minute, top_n),
    }


def tenant_windows_view(
    tables: LiveTables, tenant: str, assigned: set[int]
) -> dict[str, Any] | None:
    """Every open window of the tenant, oldest first; None when not held here."""
    partition = _partition(tables, tenant, assigned)
    if partition is None:
        return None
    return {
        "tenant": tenant,
        "partition": partition,
        "windows": {
            spec.name: [
                _window(spec, start, counts)
                for start, counts in sorted(tables.windows_of(spec, tenant).items())
            ]
            for spec in (TUMBLING_1M, HOPPING_5M)
        },
    }


def top_view(
    tables: LiveTables, tenant: str, assigned: set[int], *, n: int
) -> dict[str, Any] | None:
    """The top-`n` actions of the tenant in the current minute; None when not held here."""
    partition = _partition(tables, tenant, assigned)
    if partition is None:
        return None
    start = tables.current_start(TUMBLING_1M, partition)
    return {
        "tenant": tenant,
        "window": None
        if start is None
        else {"window": TUMBLING_1M.name, "start": _iso(start), "end": _iso(start + 60)},
        "top": _top(tables, tenant, start, n),
    }


def partitions_view(tables: LiveTables, assigned: set[int]) -> dict[str, Any]:
    partitions = []
    for partition in sorted(assigned):
        clock = tables.clock(partition)
        partitions.append(
            {
                "partition": partition,
                "stream_time": None if clock is None else _iso(clock.stream_time),
                "closed_through": None
                if clock is None or clock.closed <= 0
                else _iso(clock.closed),
            }
        )
    return {"partitions": partitions}
