"""The serde bench section runs at a tiny size and reports one figure per operation, each
next to its fastavro baseline. Structure only: no figure's value is judged here."""

from __future__ import annotations

import io
import math

from rich.console import Console

from devtools.bench import serde
from devtools.bench.harness import BenchContext, Sizes
from runtime import Settings


def test_serde_section_reports_every_operation_against_fastavro(
    stack_settings: Settings,
) -> None:
    ctx = BenchContext(stack_settings, Sizes(quick=True, scale=0.01), Console(file=io.StringIO()))
    try:
        figures = serde.run(ctx)
    finally:
        ctx.close()
    names = [figure.name for figure in figures]
    assert len(set(names)) == len(names), "figure names repeat"
    assert any(name.startswith("serialize AuditEvent") for name in names)
    for expected in ("AnalyticsEvent v1", "AuditEvent, Confluent framing", "EntityChanged"):
        assert f"deserialize {expected} median" in names
    for figure in figures:
        assert figure.section == "serde"
        assert figure.unit == "µs"
        assert 0 < figure.value < math.inf, figure
        assert figure.baseline is not None
        assert 0 < figure.baseline < math.inf, figure
        assert figure.baseline_name
