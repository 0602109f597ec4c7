"""Errors of the chaos suite: a scenario that could not run, or stalled."""

from __future__ import annotations

from runtime.errors import SidestreamError


class ChaosError(SidestreamError):
    """Base: a scenario could not set up or inject its faults."""


class StalledError(ChaosError):
    """A bounded wait ran out: the system did not get where the scenario waited for.

    Attributes:
        what: what was awaited, e.g. ``"50,000 rows committed"``.
        waited_s: how long we waited.
        progress: where it got to, when known.
    """

    def __init__(self, what: str, waited_s: float, progress: object = None) -> None:
        at = f" (reached {progress})" if progress is not None else ""
        super().__init__(f"stalled: {what} not reached within {waited_s:.0f}s{at}")
        self.what = what
        self.waited_s = waited_s
        self.progress = progress
