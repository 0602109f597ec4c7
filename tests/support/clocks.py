"""Fake clocks for code that takes ``clock`` (and ``sleep``) callables."""

from __future__ import annotations


class FakeClock:
    """A clock that stands still until a test moves :attr:`now`; call it for the time."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTime(FakeClock):
    """A fake clock whose :meth:`sleep` advances it instantly and records each pause."""

    def __init__(self, now: float = 100.0) -> None:
        super().__init__(now)
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
