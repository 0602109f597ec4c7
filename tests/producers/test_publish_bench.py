"""The publish hot path against its budget (``make bench``; never in the default run)."""

from __future__ import annotations

import pytest

from producers._bench import measure_publish
from runtime import Settings


@pytest.mark.bench
def test_publish_stays_within_its_budget(stack_settings: Settings, topic: str) -> None:
    result = measure_publish(stack_settings, topic, 100_000)
    print("\n" + "\n".join(f"{name:28s} {value:12.2f}" for name, value in result.items()))
    assert result["publisher_undelivered"] == 0
    assert result["publish_median_us"] <= 8.0
    assert result["publish_p99_us"] <= 50.0
