"""RelayConfig: built from the ``relay_*`` settings, with the same defaults."""

from __future__ import annotations

import pytest

from producers import RelayConfig
from runtime import Settings


def test_the_defaults_are_the_settings_defaults() -> None:
    assert RelayConfig() == RelayConfig.from_settings(Settings.model_construct())


def test_from_settings_maps_the_relay_settings_and_takes_changes() -> None:
    settings = Settings.model_construct(
        relay_batch_size=10,
        relay_poll_interval_s=0.5,
        relay_delivery_timeout_s=5.0,
        relay_retention_s=60.0,
    )
    config = RelayConfig.from_settings(settings, max_keys=3)
    assert (config.batch_size, config.poll_interval_s) == (10, 0.5)
    assert (config.delivery_timeout_s, config.retention_s, config.max_keys) == (5.0, 60.0, 3)


def test_invalid_settings_are_refused_when_built() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RelayConfig.from_settings(Settings.model_construct(relay_batch_size=0))
