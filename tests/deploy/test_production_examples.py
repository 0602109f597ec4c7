"""The production examples in deploy/ pass the production profile's checks except for
their placeholder secrets: TLS to Postgres and Redis, HTTPS webhooks, every secret
listed in the example Secret."""

from __future__ import annotations

from typing import Any

import yaml

from runtime import Settings
from runtime.production import production_problems
from runtime.settings import ENV_PREFIX
from sidestream.deploy_check import default_deploy_dir, render_kustomization

#: Every secret-bearing setting (SecretStr): each must be in the example Secret.
SECRETS = sorted(
    f"{ENV_PREFIX}{name.upper()}"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
)


def _environment() -> dict[str, str]:
    deploy = default_deploy_dir()
    rendered = render_kustomization(deploy / "k8s" / "overlays" / "production")
    config = next(
        o
        for o in rendered
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "sidestream-config"
    )
    secret: dict[str, Any] = yaml.safe_load(
        (deploy / "k8s" / "base" / "secret.example.yaml").read_text()
    )
    return {**config["data"], **secret["stringData"]}


def test_the_example_secret_lists_every_secret() -> None:
    environment = _environment()
    assert "SIDESTREAM_API_KEY_HASH_SECRET" in SECRETS
    assert [name for name in SECRETS if name not in environment] == []


def test_the_production_overlay_fails_only_on_its_placeholders() -> None:
    environment = _environment()
    settings = Settings.model_validate(
        {key[len(ENV_PREFIX) :].lower(): value for key, value in environment.items()}
    )
    assert settings.profile == "production"
    problems = production_problems(settings)
    # The placeholders (`change-me`) are refused, as they must be...
    assert problems
    # ...and nothing else: TLS and HTTPS are shown in the examples.
    leftovers = [p for p in problems if "default" not in p]
    assert leftovers == []
