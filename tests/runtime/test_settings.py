from __future__ import annotations

from pathlib import Path

import pytest

from runtime import ConfigError, Settings, load_settings
from runtime.clients import consumer_config, producer_config
from runtime.settings import (
    LOCAL_LINGER_MS,
    LOCAL_SESSION_TIMEOUT_MS,
    PRODUCTION_LINGER_MS,
    PRODUCTION_SESSION_TIMEOUT_MS,
)


def test_defaults_work_locally_with_no_configuration() -> None:
    settings = load_settings({})
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert settings.postgres_port == 5432
    assert settings.postgres_database == "sidestream"
    assert settings.redis_port == 6379
    assert settings.session_timeout_ms == LOCAL_SESSION_TIMEOUT_MS


def test_production_profile_keeps_kafkas_session_timeout() -> None:
    settings = load_settings({"SIDESTREAM_PROFILE": "production"})
    assert settings.session_timeout_ms == PRODUCTION_SESSION_TIMEOUT_MS
    assert consumer_config(settings, "g")["session.timeout.ms"] == PRODUCTION_SESSION_TIMEOUT_MS


def test_environment_values_are_typed_and_ports_follow_the_addresses() -> None:
    settings = load_settings(
        {
            "SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:19092",
            "SIDESTREAM_POSTGRES_DSN": "postgresql://u:pw@127.0.0.1:15432/db1",
            "SIDESTREAM_REDIS_URL": "redis://127.0.0.1:16379/2",
            "SIDESTREAM_STACK_DIR": "/srv/x",
        }
    )
    assert (settings.kafka_port, settings.postgres_port, settings.redis_port) == (
        19092,
        15432,
        16379,
    )
    assert settings.postgres_database == "db1"
    assert settings.stack_dir == Path("/srv/x")


def test_unknown_setting_fails_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError,
        match=r"SIDESTREAM_KAFKA_BOOTSRAP_SERVERS.*did you mean SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS",
    ):
        load_settings({"SIDESTREAM_KAFKA_BOOTSRAP_SERVERS": "x:1"})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SIDESTREAM_KAFKA_BOOTSTRAP_SERVERS", "localhost", "KAFKA_BOOTSTRAP_SERVERS.*host:port"),
        ("SIDESTREAM_POSTGRES_DSN", "mysql://x", "POSTGRES_DSN.*postgresql://"),
        ("SIDESTREAM_METRICS_PORT", "70000", "METRICS_PORT"),
        ("SIDESTREAM_PROFILE", "staging", "PROFILE"),
        ("SIDESTREAM_CONSUMER_MEMORY_RELEASE_INTERVAL_S", "-1", "MEMORY_RELEASE_INTERVAL_S"),
        ("SIDESTREAM_LIVE_ANALYTICS_STORE", "rocksdb://", "LIVE_ANALYTICS_STORE.*memory"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings({variable: value})


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.kafka_bootstrap_servers = "other:9092"  # type: ignore[misc]


def test_secrets_never_show_in_repr_or_errors() -> None:
    settings = load_settings(
        {
            "SIDESTREAM_POSTGRES_DSN": "postgresql://u:hunter2@127.0.0.1:5432/db",
            "SIDESTREAM_KAFKA_SASL_PASSWORD": "s3cret",
        }
    )
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        load_settings({"SIDESTREAM_POSTGRES_DSN": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(info.value)


def test_security_settings_pass_through_to_librdkafka_keys() -> None:
    settings = load_settings(
        {
            "SIDESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SIDESTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SIDESTREAM_KAFKA_SASL_USERNAME": "svc",
            "SIDESTREAM_KAFKA_SASL_PASSWORD": "pw",
            "SIDESTREAM_KAFKA_EXTRA": '{"client.rack": "eu-1a"}',
        }
    )
    config = producer_config(settings)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "svc"
    assert config["sasl.password"] == "pw"
    assert config["client.rack"] == "eu-1a"
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"


def test_local_producers_linger_longer_for_the_local_broker() -> None:
    local = load_settings({"SIDESTREAM_PROFILE": "local"})
    production = load_settings({"SIDESTREAM_PROFILE": "production"})
    assert producer_config(local)["linger.ms"] == LOCAL_LINGER_MS
    assert producer_config(production)["linger.ms"] == PRODUCTION_LINGER_MS
    tuned = load_settings({"SIDESTREAM_KAFKA_LINGER_MS": "7"})
    assert producer_config(tuned)["linger.ms"] == 7
