"""Each running worker's ``/metrics`` and ``/readyz``, as the console reads them.

Local workers announce their metrics address for Prometheus's file-based discovery
(``<stack>/prometheus/targets/*.json``, see :func:`runtime.observability.announce_targets`);
the console reads the same files, so whatever ``make observe`` would scrape, the
Pipelines page shows: throughput (a counter over two scrapes), paused and fenced
batches, retries, dead letters by error class, readiness.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["MetricsScraper", "WorkerProbe"]


@dataclass(frozen=True, slots=True)
class WorkerProbe:
    """One running worker process, as its ``/metrics`` and ``/readyz`` answered."""

    component: str
    address: str
    ready: bool | None  # None: unreachable
    error: str | None = None
    records_per_s: float | None = None  # None until two scrapes are seen
    records_total: float = 0.0
    paused: bool = False
    fenced: float = 0.0
    retries: float = 0.0
    dead_letters: dict[str, float] = field(default_factory=dict)
    event_time_lag_s: float | None = None
    open_circuits: float = 0.0  # notify workers: destinations whose breaker is open


@dataclass(slots=True)
class _Previous:
    at: float
    records: float


def _sum(families: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> float:
    return sum(families.get(name, {}).values())


class MetricsScraper:
    """Finds announced workers and reads their metrics; remembers the last scrape of each
    address so a counter becomes a rate.

    Args:
        targets_dir: the announce directory; None: no workers are found.
        timeout_s: per request (a hung worker must not hang the page).
    """

    def __init__(
        self,
        targets_dir: Path | None,
        *,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dir = targets_dir
        self._timeout_s = timeout_s
        self._clock = clock
        self._previous: dict[str, _Previous] = {}
        self._lock = threading.Lock()

    def targets(self) -> list[tuple[str, str]]:
        """``(component, host:port)`` of every announced worker."""
        if self._dir is None or not self._dir.is_dir():
            return []
        found: list[tuple[str, str]] = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                for entry in json.loads(path.read_text()):
                    component = str(entry.get("labels", {}).get("component", ""))
                    found.extend((component, str(address)) for address in entry["targets"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a file being rewritten, or not ours: the next refresh reads it
        return found

    def probe(self, component: str, address: str) -> WorkerProbe:
        base = f"http://{address}"
        try:
            with httpx.Client(timeout=self._timeout_s) as client:
                ready = client.get(f"{base}/readyz").status_code == 200
                text = client.get(f"{base}/metrics").text
        except httpx.HTTPError as exc:
            return WorkerProbe(component, address, None, error=type(exc).__name__)
        families: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                families.setdefault(sample.name, {})[labels] = sample.value
        records = _sum(families, "sidestream_consumer_records_total")
        now = self._clock()
        with self._lock:
            previous = self._previous.get(address)
            self._previous[address] = _Previous(now, records)
        rate = None
        if previous is not None and now > previous.at and records >= previous.records:
            rate = (records - previous.records) / (now - previous.at)
        dead: dict[str, float] = {}
        for labels, value in families.get("sidestream_dead_letters_total", {}).items():
            error_class = dict(labels).get("error_class", "?")
            dead[error_class] = dead.get(error_class, 0.0) + value
        lag_values = families.get("sidestream_consumer_event_time_lag_seconds", {})
        return WorkerProbe(
            component,
            address,
            ready,
            records_per_s=rate,
            records_total=records,
            paused=_sum(families, "sidestream_consumer_paused") > 0,
            fenced=_sum(families, "sidestream_batch_fenced_total"),
            retries=_sum(families, "sidestream_batch_retries_total"),
            dead_letters=dead,
            event_time_lag_s=max(lag_values.values()) if lag_values else None,
            open_circuits=_sum(families, "sidestream_delivery_open_circuits"),
        )

    def probes(self) -> dict[str, list[WorkerProbe]]:
        """Every announced worker's probe, by component (worker name)."""
        found: dict[str, list[WorkerProbe]] = {}
        for component, address in self.targets():
            found.setdefault(component, []).append(self.probe(component, address))
        return found
