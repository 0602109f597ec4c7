"""Settings handed to a child process come back as the same settings there."""

from __future__ import annotations

import os

import pytest

from runtime import load_settings
from runtime.environment import child_environment, settings_environment


def test_a_child_loads_the_same_values_from_the_environment() -> None:
    parent = load_settings({}).with_overrides(
        kafka_bootstrap_servers="127.0.0.1:1111",
        postgres_dsn="postgresql://postgres@127.0.0.1:2222/x",
        consumer_batch_max_records=123,
        consumer_retry_deadline_s=7.5,
        kafka_extra={"fetch.wait.max.ms": "10"},
        delivery_webhook_require_https=True,
    )
    names = (
        "kafka_bootstrap_servers",
        "postgres_dsn",
        "redis_url",
        "consumer_batch_max_records",
        "consumer_retry_deadline_s",
        "kafka_extra",
        "delivery_webhook_require_https",
    )
    child = load_settings(settings_environment(parent, *names))
    for name in names:
        assert getattr(child, name) == getattr(parent, name), name


def test_the_servers_by_default_and_unset_settings_left_out() -> None:
    env = settings_environment(load_settings({}), "kafka_session_timeout_ms")
    assert env == {}
    assert set(settings_environment(load_settings({}))) == {
        "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS",
        "SIDESTREAM_POSTGRES_DSN",
        "SIDESTREAM_REDIS_URL",
    }


def test_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'kafka_bootstrap' is not a setting"):
        settings_environment(load_settings({}), "kafka_bootstrap")


def test_clean_drops_inherited_sidestream_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDESTREAM_POSTGRES_SCHEMA", "inherited")
    settings = load_settings({})
    assert child_environment(settings)["SIDESTREAM_POSTGRES_SCHEMA"] == "inherited"
    clean = child_environment(settings, clean=True, extra={"X_EXTRA": "1"})
    assert "SIDESTREAM_POSTGRES_SCHEMA" not in clean
    assert clean["X_EXTRA"] == "1"
    assert clean["PATH"] == os.environ["PATH"]
