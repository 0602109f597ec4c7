"""The cache, api, e2e and invalidation bench sections run end to end at tiny sizes, report sane
figures and leave nothing behind. Structure only: no figure's value is judged here."""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from devtools.bench import api, cache, e2e, invalidation
from devtools.bench.api import WrkResult
from devtools.bench.harness import BenchContext, Figure, Sizes
from runtime import Settings
from runtime.clients import kafka_admin, postgres_connect, redis_client

Section = Callable[[BenchContext], list[Figure]]


@dataclass
class RecordingContext(BenchContext):
    """A bench context that remembers every scratch name it handed out."""

    names: list[str] = field(default_factory=list)

    def name(self, prefix: str) -> str:
        made = super().name(prefix)
        self.names.append(made)
        return made


@pytest.fixture
def bench(stack_settings: Settings) -> Iterator[RecordingContext]:
    ctx = RecordingContext(
        stack_settings, Sizes(quick=True, scale=0.1), Console(file=io.StringIO())
    )
    yield ctx
    ctx.close()


def run_section(ctx: RecordingContext, section: Section) -> list[Figure]:
    """Run ``section``, clean up, and check that nothing it created is left."""
    try:
        figures = section(ctx)
    finally:
        ctx.close()
    assert ctx.names, "the section created no scratch resources"
    topics = set(kafka_admin(ctx.settings).list_topics(timeout=15).topics)
    client = redis_client(ctx.settings)
    try:
        with postgres_connect(ctx.settings) as conn:
            for name in ctx.names:
                assert name not in topics
                assert not list(client.scan_iter(match=f"{name}:*", count=1000))
                row = conn.execute(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (name,)
                ).fetchone()
                assert row == (0,), f"schema {name} was left behind"
    finally:
        client.close()
    return figures


def check_figures(figures: list[Figure], section: str, expected: set[str]) -> dict[str, Figure]:
    by_name = {figure.name: figure for figure in figures}
    assert len(by_name) == len(figures), "figure names repeat"
    assert expected <= set(by_name), f"missing figures: {expected - set(by_name)}"
    for figure in figures:
        assert figure.section == section
        assert figure.unit
        assert 0 < figure.value < math.inf, figure  # also false for NaN
        if figure.baseline is not None:
            assert 0 < figure.baseline < math.inf, figure
            assert figure.baseline_name
        # A verdict exactly when there is a target to judge against (its value is not judged).
        if figure.target is None:
            assert figure.passed is None, figure
        else:
            assert isinstance(figure.passed, bool), figure
    return by_name


def test_cache_section_reports_hits_the_stampede_and_cross_process_evictions(
    bench: RecordingContext,
) -> None:
    figures = check_figures(
        run_section(bench, cache.run),
        "cache",
        {
            "get_or_load L1 hit p50",
            "get_or_load L1 hit p99",
            "get_or_load Redis hit p50",
            "get_or_load Redis hit p99",
            "1,000 concurrent misses on one key: loader calls",
            "write → L1 eviction in another process p50",
            "write → L1 eviction in another process p99",
        },
    )
    for name in ("get_or_load L1 hit p50", "get_or_load Redis hit p50"):
        assert figures[name].baseline is not None
    stampede = figures["1,000 concurrent misses on one key: loader calls"]
    assert stampede.value == int(stampede.value)
    assert stampede.target is not None
    assert stampede.target.on == "value"
    evictions = figures["write → L1 eviction in another process p99"]
    assert evictions.target is not None
    assert evictions.unit == "ms"


def test_api_section_measures_cached_reads_against_healthz_with_wrk(
    bench: RecordingContext,
) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed (deploy/install-tools.sh)")
    figures = check_figures(
        run_section(bench, api.run),
        "api",
        {
            "cached GET project throughput",
            "cached GET project p50",
            "cached GET project p99",
            "GET project without L1 (Redis hit) throughput",
            "GET project without L1 (Redis hit) p99",
        },
    )
    throughput = figures["cached GET project throughput"]
    assert throughput.unit == "req/s"
    assert throughput.baseline_name == "GET /healthz, same server"
    assert "errors" not in throughput.note, throughput.note


def test_api_section_without_wrk_is_skipped_with_a_note(
    stack_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ctx = BenchContext(stack_settings, Sizes(quick=True), Console(file=io.StringIO()))
    try:
        [figure] = api.run(ctx)
    finally:
        ctx.close()
    assert figure.section == "api"
    assert "skipped" in figure.note
    assert "deploy/install-tools.sh" in figure.note
    assert figure.target is None


def test_e2e_section_measures_publish_to_visible_row_after_the_join(
    bench: RecordingContext,
) -> None:
    figures = check_figures(
        run_section(bench, e2e.run),
        "e2e",
        {
            "offered load",
            "publish → row visible p50",
            "publish → row visible p99",
            "ingested_at - occurred_at p99",
        },
    )
    assert figures["publish → row visible p50"].value <= figures["publish → row visible p99"].value
    p99 = figures["publish → row visible p99"]
    assert p99.target is not None
    assert p99.target.threshold == 500


def test_invalidation_section_measures_change_to_tombstone_with_the_worker_in_a_process(
    bench: RecordingContext,
) -> None:
    figures = check_figures(
        run_section(bench, invalidation.run),
        "invalidation",
        {
            "offered load",
            "EntityChanged → key tombstoned p50",
            "EntityChanged → key tombstoned p99",
            "publish → Kafka ack p99",
            "Kafka ack → key tombstoned p99",
        },
    )
    p50 = figures["EntityChanged → key tombstoned p50"]
    p99 = figures["EntityChanged → key tombstoned p99"]
    assert p50.value <= p99.value
    assert p99.target is not None
    assert (p99.target.on, p99.target.threshold) == ("value", 100)
    # Every change was counted: quick size at scale 0.1 is 0.2 s at 1,000/s.
    assert "200 changes" in p50.note, p50.note
    assert "flame graph" not in " ".join(figures), "no profile was asked for"


WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:8000/healthz
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.21ms    1.02ms  20.00ms   90.00%
    Req/Sec    10.00k   500.00    11.00k    80.00%
  Latency Distribution
     50%  812.00us
     75%    3.50ms
     90%    4.00ms
     99%    1.20s
  20000 requests in 2.00s, 3.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  10000.50
Transfer/sec:      1.50MB
"""


def test_wrk_output_is_parsed_with_units_and_failures() -> None:
    result = WrkResult.parse(WRK_OUTPUT)
    assert result.p50_ms == pytest.approx(0.812)
    assert (result.requests, result.rps, result.p99_ms, result.errors) == (20000, 10000.5, 1200, 8)


def test_wrk_output_without_percentiles_is_rejected() -> None:
    with pytest.raises(ValueError, match="unexpected wrk output"):
        WrkResult.parse("Requests/sec: 1.0\n")
