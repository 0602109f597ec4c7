"""Settings → the environment of a child process (a worker, the API, a test peer).

A parent that holds :class:`~runtime.settings.Settings` (possibly with overrides that are
in no environment variable) hands them to a child as ``SIDESTREAM_*`` variables, which the
child reads once at start-up like any other process. The names come from the settings'
field names, so they cannot drift from what :func:`runtime.load_settings` reads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr

from runtime.settings import ENV_PREFIX, Settings

__all__ = ["SERVERS", "child_environment", "settings_environment"]

#: The settings that point a child at the same Kafka, Postgres and Redis.
SERVERS = ("kafka_bootstrap_servers", "postgres_dsn", "redis_url")


def _encoded(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return str(value)
    return str(value)


def settings_environment(settings: Settings, *names: str) -> dict[str, str]:
    """``SIDESTREAM_<NAME>`` for each setting in ``names`` (default :data:`SERVERS`) that
    is set; a setting that is None is left out, so the child keeps its own default.

    Raises ``ValueError`` for a name that is not a setting.
    """
    env = {}
    for name in names or SERVERS:
        if name not in Settings.model_fields:
            raise ValueError(f"{name!r} is not a setting; see runtime/settings.py")
        value = getattr(settings, name)
        if value is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = _encoded(value)
    return env


def child_environment(
    settings: Settings,
    *names: str,
    clean: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment with :func:`settings_environment` (``names``, default
    :data:`SERVERS`) and then ``extra`` on top. With ``clean``, inherited ``SIDESTREAM_*``
    variables are dropped first, so the child sees only what ``settings`` says."""
    inherited = {k: v for k, v in os.environ.items() if not (clean and k.startswith(ENV_PREFIX))}
    return {**inherited, **settings_environment(settings, *names), **(extra or {})}
