"""DeliveryConfig: local defaults, validation, and building from settings or JSON."""

from __future__ import annotations

from typing import cast

import pytest

from consumers.delivery import DeliveryConfig
from runtime import Settings


def test_defaults_are_valid_and_secrets_are_not_shown() -> None:
    config = DeliveryConfig(smtp_password="hunter2")
    assert config.smtp_host == "127.0.0.1"
    assert "hunter2" not in repr(config)
    assert config.webhook_signing_secret not in repr(config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"backoff_base_s": 0}, "backoff_base_s"),
        ({"claim_batch": 100, "max_in_flight": 10}, "claim_batch"),
        ({"lease_s": 15, "webhook_timeout_s": 10}, "lease_s"),
        ({"webhook_signing_secret": ""}, "secret"),
    ],
)
def test_invalid_values_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DeliveryConfig(**changes)  # type: ignore[arg-type]


def test_from_mapping_and_replace_reject_unknown_fields() -> None:
    assert DeliveryConfig.from_mapping({"max_attempts": 3}).max_attempts == 3
    with pytest.raises(ValueError, match="unknown DeliveryConfig fields: nope"):
        DeliveryConfig.from_mapping({"nope": 1})
    with pytest.raises(ValueError, match="unknown"):
        DeliveryConfig().replace(nope=1)
    assert DeliveryConfig().replace(per_host_concurrency=2).per_host_concurrency == 2


def test_from_settings_uses_defaults_for_settings_that_do_not_exist_yet() -> None:
    assert DeliveryConfig.from_settings(Settings()) == DeliveryConfig()


def test_from_settings_reads_delivery_fields() -> None:
    from pydantic import SecretStr

    class WithDelivery(Settings):
        delivery_max_attempts: int = 3
        delivery_smtp_password: SecretStr = SecretStr("pw")

    config = DeliveryConfig.from_settings(WithDelivery())
    assert (config.max_attempts, config.smtp_password) == (3, "pw")


def test_production_refuses_the_local_signing_secret() -> None:
    import threading

    from consumers.delivery import run_notify_worker
    from runtime import ConfigError

    with pytest.raises(ConfigError, match="SIGNING_SECRET"):
        run_notify_worker(Settings(profile="production"), stop=threading.Event())


def test_production_guard_requires_https_and_refuses_private_targets() -> None:
    config = DeliveryConfig(allow_private_targets=True, webhook_require_https=False)
    local, production = config.target_guard(production=False), config.target_guard(production=True)
    assert (local.allow_private, local.require_https) == (True, False)
    assert (production.allow_private, production.require_https) == (False, True)


def test_production_refuses_the_development_target_setting() -> None:
    import threading

    from consumers.delivery import run_notify_worker
    from runtime import ConfigError

    settings = Settings(
        profile="production",
        delivery_webhook_signing_secret="a-real-signing-secret-0123456789",
        delivery_endpoint_secrets_key="a-real-endpoint-key-0123456789",
        delivery_allow_private_targets=True,
    )
    with pytest.raises(ConfigError, match="ALLOW_PRIVATE_TARGETS"):
        run_notify_worker(settings, stop=threading.Event())


def test_production_refuses_the_local_endpoint_secrets_key() -> None:
    import threading

    from consumers.delivery import run_notify_worker
    from runtime import ConfigError

    settings = Settings(
        profile="production", delivery_webhook_signing_secret="a-real-signing-secret-0123456789"
    )
    with pytest.raises(ConfigError, match="ENDPOINT_SECRETS_KEY"):
        run_notify_worker(settings, stop=threading.Event())


def test_from_settings_maps_every_delivery_setting() -> None:
    settings = Settings.model_construct()
    read: set[str] = set()

    class Recording:
        def __getattr__(self, name: str) -> object:
            read.add(name)
            return getattr(settings, name)

    DeliveryConfig.from_settings(cast(Settings, Recording()))
    assert read == {name for name in Settings.model_fields if name.startswith("delivery_")}
