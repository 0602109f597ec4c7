"""What the code says a deployment must contain: the workers, their consumer groups and
topics, and the settings each process would start with.

Read from :mod:`services.workers` (the one declaration of every worker) and from
:class:`runtime.Settings`, so a deployment that drifts from the code fails the check.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from runtime import ConfigError, Settings, load_settings
from runtime.settings import ENV_PREFIX


@dataclass(frozen=True, slots=True)
class KafkaConsumer:
    """A worker reading Kafka: its consumer group and topics (with partitions)."""

    group: str
    topics: Mapping[str, int]


def kafka_consumers() -> dict[str, KafkaConsumer]:
    """Every Kafka-consuming worker, by name, with its topics' partition counts."""
    from schemas.topics import load_topics
    from services.workers import WORKERS

    partitions = {spec.name: spec.partitions for spec in load_topics()}
    return {
        worker.name: KafkaConsumer(worker.group, {t: partitions.get(t, 0) for t in worker.topics})
        for worker in WORKERS.values()
        if worker.group is not None
    }


def deployed_workers() -> frozenset[str]:
    """Every worker a deployment must run (``sidestream worker run <name>``)."""
    from services.workers import WORKERS

    return frozenset(WORKERS)


def api_drain_seconds() -> float:
    """How long the API drains on SIGTERM (its grace period must exceed it)."""
    from services.api.server import GRACEFUL_SHUTDOWN_S

    return float(GRACEFUL_SHUTDOWN_S)


def command_line(container: Mapping[str, Any]) -> list[str]:
    command = [str(c) for c in container.get("command", []) or []]
    args = [str(a) for a in container.get("args", []) or []]
    if command[:2] == ["sh", "-c"]:
        return " ".join(command[2:] + args).split()
    return (command or ["sidestream"]) + args


def role(argv: list[str]) -> str | None:
    """``worker:<name>`` or ``api`` for a sidestream command line, else None."""
    words = argv[1:] if argv and argv[0] == "sidestream" else argv
    if words[:2] == ["worker", "run"] and len(words) > 2:
        return f"worker:{words[2]}"
    if words[:1] == ["api"]:
        return "api"
    return None


def option(argv: list[str], name: str) -> str | None:
    for index, word in enumerate(argv):
        if word == name and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


class _DeclaredSettings(Settings):
    """The deployment's values over the defaults, never this machine's environment or
    ``.env`` (which a plain :class:`Settings` would also read)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


@functools.lru_cache(maxsize=256)
def _declared_settings(items: tuple[tuple[str, str], ...]) -> Settings | str:
    environ = dict(items)
    try:
        # The runtime's own check first: unknown variables get its message and hint.
        load_settings(environ=environ)
        return _DeclaredSettings.model_validate(
            {key[len(ENV_PREFIX) :].lower(): value for key, value in environ.items()}
        )
    except ConfigError as exc:
        return str(exc)
    except ValidationError as exc:
        return f"invalid settings: {exc.errors()[0]['msg']}"


def _settings(environ: Mapping[str, str]) -> Settings | str:
    """The settings a process with ``environ`` would run with, or why it would not start."""
    return _declared_settings(tuple(sorted((k, str(v)) for k, v in environ.items())))


def settings_problem(environ: Mapping[str, str]) -> str | None:
    result = _settings(environ)
    return result if isinstance(result, str) else None


def _valid_settings(environ: Mapping[str, str]) -> Settings:
    result = _settings(environ)
    assert not isinstance(result, str), result  # callers check _settings_problem first
    return result


def shutdown_deadline(environ: Mapping[str, str]) -> float:
    return _valid_settings(environ).consumer_shutdown_deadline_s


def metrics_port(environ: Mapping[str, str]) -> int:
    return _valid_settings(environ).metrics_port
