"""The decoding micro-benchmark measures the fast path it names, and every cost it prints."""

from __future__ import annotations

import gc

from devtools.bench import sink_decode


def test_sink_decode_reports_each_stage_with_every_record_on_the_fast_path() -> None:
    threshold = gc.get_threshold()
    # measure() raises if any record leaves the row decoder: the figure would be mislabelled.
    costs = sink_decode.measure(count=60, rounds=2)

    assert set(costs) == {
        "loop: fast path (row decoder)",
        "loop: careful path (event)",
        "writer: fast path's COPY rows",
        "writer: careful path's COPY rows",
    }
    for cost in costs.values():
        assert cost.least_us > 0  # measured, not an empty loop
    assert gc.get_threshold() == threshold  # the test process keeps its GC settings
