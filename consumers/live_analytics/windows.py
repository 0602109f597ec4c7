"""Event-time windows: which windows an event falls in, and when a window is final.

Windows follow the event's ``occurred_at`` (event time), never the wall clock, so a replay
of last week's stream yields the same windows as the live run did. Each source partition
has a *watermark*: how far its event time has certainly got. faust reads the analytics and
the audit topic side by side, not merged by event time — during a catch-up one runs
minutes ahead of the other — so the watermark is the latest ``occurred_at`` read from the
slowest source topic that still has records waiting on that partition (topics that are
caught up do not hold it back; when all are, it is the newest event time seen). A window
is final once the watermark has passed its end by the allowed lateness (`grace_s`); events
that arrive for a window that is already final are *late*: they are counted in a metric and
left out of the live counts (the exact rollups in Postgres still get them).

The windows are faust's (``TumblingWindow``/``HoppingWindow``, aligned to the Unix epoch);
faust keys a window by ``(start, start + size - 0.1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import faust

__all__ = ["HOPPING_5M", "TUMBLING_1M", "WindowSpec", "closed_through", "minute_of"]

STEP_S = 60
"""Every window starts on a minute boundary (of event time)."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One family of windows: `size_s` seconds long, one starting every `step_s` seconds."""

    name: str
    """Short name, used in table names, metrics and the web views (``1m``, ``5m``)."""
    size_s: int
    step_s: int = STEP_S

    def __post_init__(self) -> None:
        if self.step_s != STEP_S or self.size_s < STEP_S or self.size_s % STEP_S:
            raise ValueError(
                f"window {self.name}: windows start every {STEP_S} s and last a whole number "
                f"of minutes, got size {self.size_s} s, step {self.step_s} s"
            )

    @property
    def tumbling(self) -> bool:
        return self.size_s == self.step_s

    def faust_window(self) -> Any:
        """The faust window object for ``Table.using_window`` (a hopping or tumbling one)."""
        if self.tumbling:
            return faust.TumblingWindow(self.size_s)
        return faust.HoppingWindow(self.size_s, self.step_s)

    def is_final(self, start: float, closed: float) -> bool:
        """True once the window starting at `start` ends at or before `closed`."""
        return start + self.size_s <= closed

    def latest_start(self, moment: float) -> float:
        """Start of the last window that holds `moment` and ends soonest after it, i.e. the
        window "now" belongs to when the clock reads `moment`: ``[m - size + step, m + step)``
        for the minute ``m`` of `moment`."""
        minute = math.floor(moment / self.step_s) * self.step_s
        return float(minute - self.size_s + self.step_s)


TUMBLING_1M = WindowSpec("1m", 60)
"""Tumbling one-minute windows: ``[12:00, 12:01)``, ``[12:01, 12:02)``, ..."""

HOPPING_5M = WindowSpec("5m", 300)
"""Hopping five-minute windows, one starting every minute: ``[12:00, 12:05)``, ``[12:01, ...``."""


def minute_of(moment: float) -> float:
    """Start of the minute (of event time) that holds `moment`."""
    return float(math.floor(moment / STEP_S) * STEP_S)


def closed_through(stream_time: float, grace_s: float) -> float:
    """Every window that ends at or before the returned instant is final.

    That is the last minute boundary at or before ``stream_time - grace_s``: with a stream
    time of 12:03:20 and 10 s of grace, every window ending by 12:03:00 is final.
    """
    if grace_s < 0:
        raise ValueError(f"grace_s must not be negative, got {grace_s}")
    return float(math.floor((stream_time - grace_s) / STEP_S) * STEP_S)
