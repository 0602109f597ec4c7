"""What every scenario shares: its context (settings, seed, size), and one run's lifecycle.

A scenario is a function ``run(ctx) -> ScenarioReport``. Inside it, a
:class:`ScenarioRun` owns everything the scenario starts (private stacks, processes,
proxies, threads), records each fault it injects, bounds every wait by the scenario's
budget, and on exit — whatever happened — stops it all, then judges the report::

    with ScenarioRun(ctx, "worker-kills", budget_s=300) as run:
        stack = run.private_stack()
        ...                      # set up, inject faults with run.fault("..."), measure
    return run.report            # passed or not; an exception became report.failure
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from devtools.chaos.errors import StalledError
from devtools.chaos.report import ScenarioReport
from devtools.chaos.stack import PrivateStack
from runtime import Settings

__all__ = ["ChaosContext", "ScenarioRun", "Size", "fault_points"]

logger = logging.getLogger(__name__)

Size = Literal["tiny", "quick", "full"]
"""``full``: the issue's sizes; ``quick``: CI (a few minutes for all); ``tiny``: tests."""

SIZES: tuple[Size, ...] = ("tiny", "quick", "full")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosContext:
    """What a scenario runs with.

    Attributes:
        settings: the base settings (binaries, profile); every scenario replaces the
            connection settings with those of its private stack.
        seed: seeds every random choice (fault points, durations, the event stream).
        size: how big the scenario runs.
        root: where scratch directories go (default: the system temp dir).
        keep_failed: keep the scratch directory (server and worker logs) of a scenario
            that failed, and name it in the report.
        log: where progress lines go.
    """

    settings: Settings
    seed: int = 0
    size: Size = "quick"
    root: Path | None = None
    keep_failed: bool = True
    log: Callable[[str], None] = logger.info

    def rng(self, name: str) -> random.Random:
        """The random source of scenario ``name`` (its own, so scenarios do not shift
        each other's draws when some are skipped)."""
        return random.Random(f"{self.seed}:{name}")


def fault_points(
    rng: random.Random, count: int, total: int, *, low: float = 0.05, high: float = 0.9
) -> list[int]:
    """``count`` sorted random points in ``[low·total, high·total)``: where, in rows
    committed, the faults of a stream go."""
    return sorted(int(rng.uniform(low, high) * total) for _ in range(count))


class ScenarioRun:
    """One scenario's run: its report, its budget, and everything it must stop.

    Args:
        ctx: the context.
        name: the scenario's name (in the report and scratch directory names).
        budget_s: bound on the whole run; every :meth:`wait_for` stops at it.
    """

    def __init__(self, ctx: ChaosContext, name: str, *, budget_s: float) -> None:
        self.ctx = ctx
        self.name = name
        self.report = ScenarioReport(name=name, seed=ctx.seed)
        self.budget_s = budget_s
        self._started = time.monotonic()
        self._cleanups = contextlib.ExitStack()
        self._stacks: list[PrivateStack] = []
        self._watches: list[Callable[[], None]] = []

    # --- time -------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def remaining(self) -> float:
        return max(0.0, self.budget_s - self.elapsed())

    def wait_for(
        self,
        check: Callable[[], bool],
        what: str,
        *,
        timeout_s: float | None = None,
        interval_s: float = 0.1,
        progress: Callable[[], object] | None = None,
    ) -> None:
        """Poll ``check`` until true; raise :class:`StalledError` after ``timeout_s`` (or
        when the scenario's budget runs out, whichever comes first). Every poll also runs
        the :meth:`watch` callbacks first, so a crashed process fails the wait at once."""
        limit = self.remaining() if timeout_s is None else min(timeout_s, self.remaining())
        deadline = time.monotonic() + limit
        while True:
            for watch in self._watches:
                watch()
            if check():
                return
            if time.monotonic() >= deadline:
                raise StalledError(what, limit, progress() if progress else None)
            time.sleep(interval_s)

    def sleep(self, seconds: float) -> None:
        """Sleep, but never past the budget."""
        time.sleep(max(0.0, min(seconds, self.remaining())))

    # --- resources --------------------------------------------------------------------
    def private_stack(self, **options: Any) -> PrivateStack:
        """Start a :class:`PrivateStack` that is closed when the run ends."""
        stack = PrivateStack(self.ctx.settings, name=self.name, root=self.ctx.root, **options)
        self._stacks.append(stack)
        stack.start()
        return stack

    def watch(self, check: Callable[[], None]) -> None:
        """Run ``check`` on every poll of :meth:`wait_for`; it raises when something the
        scenario depends on broke (e.g. :meth:`WorkerGroup.check`)."""
        self._watches.append(check)

    def on_exit(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the run ends (last registered, first called), before
        the private stacks stop. Errors in it are logged, not raised."""

        def guarded() -> None:
            try:
                callback()
            except Exception:
                logger.exception("%s: cleanup failed", self.name)

        self._cleanups.callback(guarded)

    # --- recording --------------------------------------------------------------------
    def fault(self, what: str, *, at: float | None = None, count: int = 1) -> None:
        """Record ``count`` injected faults, injected ``at`` seconds into the run
        (default: now)."""
        self.report.faults += count
        line = f"{self.elapsed() if at is None else at:6.1f}s {what}"
        self.report.fault_log.append(line)
        self.ctx.log(f"[{self.name}] fault {self.report.faults}: {what}")

    def note(self, text: str) -> None:
        self.report.notes.append(text)

    def log(self, text: str) -> None:
        self.ctx.log(f"[{self.name}] {text}")

    # --- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> ScenarioRun:
        self.log(f"starting (seed {self.ctx.seed}, size {self.ctx.size})")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Stop everything, judge the report; an ``Exception`` becomes its failure."""
        if exc is not None:
            if isinstance(exc, Exception):
                logger.error("%s failed", self.name, exc_info=exc)
            self.report.failure = f"{type(exc).__name__}: {exc}"
        self._cleanups.close()
        self.report.seconds = self.elapsed()
        passed = self.report.judge()
        for stack in self._stacks:
            stack.keep = self.ctx.keep_failed and not passed
            if stack.keep:
                self.note(f"logs kept in {stack.directory}")
            stack.close()
        self.log(
            f"{'passed' if passed else 'FAILED'} in {self.report.seconds:.1f}s: "
            f"{self.report.faults} faults, {self.report.events_in:,} in, "
            f"{self.report.rows_out:,} out, {self.report.duplicates} dups, "
            f"{self.report.missing} missing, {self.report.stale} stale, "
            f"{self.report.errors} errors"
        )
        # Swallow Exceptions (they are the report's failure); let KeyboardInterrupt and
        # SystemExit through, after everything was stopped above.
        return exc is None or isinstance(exc, Exception)
