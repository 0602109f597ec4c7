"""The production profile's refusals (runtime/production.py), and that the API and the
workers apply them at start: exit 2, one line, no secret in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runtime import ConfigError, Settings
from runtime.production import check_production, production_problems

_SAFE: dict[str, Any] = {
    "profile": "production",
    "postgres_dsn": "postgresql://sidestream:s3cr3t-pg@db:5432/sidestream?sslmode=verify-full",
    "redis_url": "rediss://:s3cr3t-redis@cache:6380/0",
    "delivery_webhook_signing_secret": "a-real-signing-secret-1234",
    "api_key_hash_secret": "a-real-hash-secret-5678",
    "delivery_endpoint_secrets_key": "a-real-endpoint-secrets-key-9012",
    "delivery_webhook_require_https": True,
}


def production(**changes: Any) -> Settings:
    return Settings.model_validate({**_SAFE, **changes})


def test_the_local_profile_refuses_nothing() -> None:
    assert production_problems(Settings()) == []
    check_production(Settings())


def test_a_safe_production_configuration_passes() -> None:
    assert production_problems(production()) == []


def test_production_defaults_are_refused_in_one_line_without_secrets() -> None:
    defaults = Settings(profile="production", kafka_sasl_password="change-me")
    problems = production_problems(defaults)
    joined = "; ".join(problems)
    for variable in (
        "SIDESTREAM_DELIVERY_WEBHOOK_SIGNING_SECRET",
        "SIDESTREAM_API_KEY_HASH_SECRET",
        "SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY",
        "SIDESTREAM_DELIVERY_WEBHOOK_REQUIRE_HTTPS",
        "SIDESTREAM_POSTGRES_DSN needs ?sslmode",
        "SIDESTREAM_REDIS_URL needs rediss://",
        "SIDESTREAM_KAFKA_SASL_PASSWORD",
    ):
        assert variable in joined
    with pytest.raises(ConfigError) as raised:
        check_production(defaults)
    message = str(raised.value)
    assert "\n" not in message
    assert "sidestream-local" not in message  # names the variable, never the value
    assert "change-me" not in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"postgres_dsn": "postgresql://u:postgres@db/s?sslmode=require"}, "default password"),
        ({"redis_url": "rediss://:change-me@cache:6380/0"}, "default password"),
        ({"postgres_dsn": "postgresql://u:pw-real@db/s?sslmode=prefer"}, "sslmode"),
        ({"delivery_smtp_password": "password"}, "DELIVERY_SMTP_PASSWORD"),
        ({"api_auth": "none"}, "API_AUTH=none"),
        (
            {
                "api_jwt_jwks": "http://idp/jwks.json",
                "api_jwt_issuer": "i",
                "api_jwt_audience": "a",
            },
            "API_JWT_JWKS must be an https:// URL",
        ),
    ],
)
def test_each_refusal(changes: dict[str, Any], expected: str) -> None:
    assert expected in "; ".join(production_problems(production(**changes)))


def test_transport_checks_can_be_waived_explicitly_secrets_cannot() -> None:
    plaintext = production(
        postgres_dsn="postgresql://u:pw-real@db/s",
        redis_url="redis://:pw-real@cache:6379/0",
        delivery_webhook_require_https=False,
        production_allow_insecure="postgres-plaintext, redis-plaintext,http-webhooks",
    )
    assert production_problems(plaintext) == []
    waived_but_default = production(
        production_allow_insecure="postgres-plaintext",
        delivery_webhook_signing_secret="sidestream-local-signing-secret",
    )
    assert production_problems(waived_but_default)
    with pytest.raises(ValueError, match="unknown"):
        production(production_allow_insecure="everything")


def test_workers_need_no_api_authentication() -> None:
    open_api = production(api_auth="none")
    assert production_problems(open_api, "worker") == []
    assert production_problems(open_api, "api")


def test_secret_bearing_settings_never_show_in_a_repr() -> None:
    settings = production(kafka_extra={"sasl.password": "kafka-extra-secret"})
    text = repr(settings) + str(settings)
    for secret in ("kafka-extra-secret", "s3cr3t-pg", "s3cr3t-redis", "a-real-hash-secret"):
        assert secret not in text


@pytest.mark.parametrize("command", [["api"], ["worker", "run", "audit"]])
def test_processes_refuse_to_start_with_production_defaults(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDESTREAM_")}
    env.update(
        SIDESTREAM_PROFILE="production",
        SIDESTREAM_STACK_DIR="/nonexistent",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    result = subprocess.run(
        [sys.executable, "-m", "sidestream", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",  # no .env from the checkout
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: production profile:")
    assert "SIDESTREAM_DELIVERY_WEBHOOK_SIGNING_SECRET" in lines[0]


def test_private_webhook_targets_are_refused_in_production() -> None:
    problems = production_problems(production(delivery_allow_private_targets=True))
    assert any("DELIVERY_ALLOW_PRIVATE_TARGETS" in problem for problem in problems)
