from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import Counter

from runtime import ObservabilityServer, new_registry


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - http only
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_serves_metrics_health_and_readiness() -> None:
    registry = new_registry()
    processed = Counter("records_processed", "records", registry=registry)
    processed.inc(3)
    ready = {"value": False}
    with ObservabilityServer(registry=registry, ready=lambda: ready["value"]) as server:
        status, body = _get(f"{server.url}/metrics")
        assert status == 200
        assert "records_processed_total 3.0" in body
        assert _get(f"{server.url}/healthz")[0] == 200
        assert _get(f"{server.url}/readyz")[0] == 503
        ready["value"] = True
        assert _get(f"{server.url}/readyz")[0] == 200
        assert _get(f"{server.url}/nope")[0] == 404


def test_a_failing_readiness_check_reports_not_ready() -> None:
    def broken() -> bool:
        raise RuntimeError("db down")

    with ObservabilityServer(registry=new_registry(), ready=broken) as server:
        assert _get(f"{server.url}/readyz")[0] == 503


def test_fresh_registries_do_not_share_metrics() -> None:
    first, second = new_registry(), new_registry()
    Counter("same_name", "x", registry=first)
    Counter("same_name", "x", registry=second)  # no "duplicated timeseries" error
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("same_name", "x", registry=first)
