"""Metric names: read from the code's declarations, and picked out of PromQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.deploy import exported_metrics, promql_metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sidestream_consumer_lag", {"sidestream_consumer_lag"}),
        (
            'sum by (sink, le) (rate(sidestream_batch_seconds_bucket{sink=~"$sink"}'
            "[$__rate_interval]))",
            {"sidestream_batch_seconds_bucket"},
        ),
        (
            "sidestream:api_error_ratio:rate5m > 0.01 and sum(rate(a_total[5m])) > 0.5",
            {"sidestream:api_error_ratio:rate5m", "a_total"},
        ),
        ('up{job="sidestream", component=~"a|b(c)"} == 0', {"up"}),
        ("x offset 5m > bool 1e-3", {"x"}),
        ("a / on (cache) group_left (layer) b or vector(0)", {"a", "b"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[${window}])))", {"h_bucket"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_the_codes_metrics_include_f_string_names_and_exposition_suffixes() -> None:
    metrics = exported_metrics()
    assert metrics.families["sidestream_consumer_records"] == "Counter"
    # services/cache/metrics.py builds f"sidestream_cache_{name}" in a helper.
    assert metrics.families["sidestream_cache_hits"] == "Counter"
    assert {
        "sidestream_consumer_records_total",
        "sidestream_batch_seconds_bucket",
    } <= metrics.series
    assert "sidestream_consumer_records" not in metrics.series  # a counter needs _total
    assert metrics.knows("up")
    assert metrics.knows("process_resident_memory_bytes")
    assert not metrics.unresolved


def test_scanner_resolves_helpers_and_reports_what_it_cannot_read(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "m.py").write_text(
        "from collections import Counter as Tally\n"
        "from prometheus_client import Counter, Gauge as G, Histogram\n"
        "import prometheus_client as pc\n"
        "Tally('not a metric')\n"
        "Counter('app_jobs_total', 'doc')\n"
        "G('queue', 'doc', namespace='app', unit='bytes')\n"
        "pc.Summary('app_wait_seconds', 'doc')\n"
        "def family(suffix, doc):\n"
        "    return Histogram(f'app_{suffix}_seconds', doc)\n"
        "family('load', 'x')\n"
        "family('save', 'y')\n"
        "def dynamic(name):\n"
        "    return Counter(name.upper(), 'doc')\n"
    )
    metrics = exported_metrics([package])
    assert dict(metrics.families) == {
        "app_jobs": "Counter",
        "app_queue_bytes": "Gauge",
        "app_wait_seconds": "Summary",
        "app_load_seconds": "Histogram",
        "app_save_seconds": "Histogram",
    }
    assert [place.rsplit(":", 1)[1] for place in metrics.unresolved] == ["13"]
