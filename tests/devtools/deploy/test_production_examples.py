"""The production examples in deploy/ pass the production profile's checks except for
their placeholder secrets: TLS to Postgres and Redis, HTTPS webhooks, every secret
listed in the example Secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runtime import Settings
from runtime.production import production_problems
from runtime.settings import ENV_PREFIX

#: Every secret-bearing setting (SecretStr): each must be in the example Secret.
SECRETS = sorted(
    f"{ENV_PREFIX}{name.upper()}"
    for name, field in Settings.model_fields.items()
    if "SecretStr" in str(field.annotation)
)


K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"


def _data(path: Path, key: str) -> dict[str, str]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return {str(k): str(v) for k, v in document[key].items()}


def _environment() -> dict[str, str]:
    """What a production pod gets: the base ConfigMap, the production overlay's patch of
    it (a strategic merge of `data`: keys replaced), and the example Secret."""
    return {
        **_data(K8S / "base" / "config.yaml", "data"),
        **_data(K8S / "overlays" / "production" / "patches" / "config.yaml", "data"),
        **_data(K8S / "base" / "secret.example.yaml", "stringData"),
    }


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
