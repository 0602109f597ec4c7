"""BatchConfig: its defaults are the settings' defaults, and a worker takes one passed in."""

from __future__ import annotations

import dataclasses

import pytest

from consumers import BatchConfig
from runtime import Settings


def test_the_defaults_are_the_settings_defaults() -> None:
    assert BatchConfig() == BatchConfig.from_settings(Settings.model_construct())


def test_from_settings_maps_the_consumer_settings() -> None:
    settings = Settings.model_construct(
        consumer_batch_max_records=7,
        consumer_batch_max_wait_ms=50,
        consumer_retry_deadline_s=3.0,
        consumer_shutdown_deadline_s=4.0,
    )
    config = BatchConfig.from_settings(settings)
    assert (config.max_records, config.max_wait_s) == (7, 0.05)
    assert (config.retry_deadline_s, config.shutdown_deadline_s) == (3.0, 4.0)
    assert dataclasses.replace(config, max_records=9).max_wait_s == 0.05


def test_the_memory_release_interval_comes_from_the_settings_and_is_validated() -> None:
    settings = Settings.model_construct(consumer_memory_release_interval_s=0.0)
    assert BatchConfig.from_settings(settings).memory_release_interval_s == 0.0
    assert BatchConfig().memory_release_interval_s == 1.0
    with pytest.raises(ValueError, match="memory_release_interval_s must be >= 0"):
        BatchConfig(memory_release_interval_s=-1.0)
