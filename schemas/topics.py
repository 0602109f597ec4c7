"""Which topic carries which events, and how each topic is configured (``topics.yaml``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from schemas.errors import SchemaError
from schemas.events import EVENT_TYPES, Event

TOPICS_FILE = Path(__file__).with_name("topics.yaml")
DEAD_LETTER_SUFFIX = ".dlq"

# Kafka's own rule for a topic name (kafka.common.internals.Topic): a broker refuses any
# other, and some clients wait on it instead of failing.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def check_topic_name(name: str) -> str:
    """``name`` if Kafka accepts it as a topic name, else ``ValueError`` saying what is
    expected (for names operators type: CLI options)."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a Kafka topic name: expected 1-249 of a-z A-Z 0-9 . _ - (not . or ..)"
        )
    return name


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as it should exist on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    dead_letter_of: str | None = None


class TopicsFileError(SchemaError, ValueError):
    """``topics.yaml`` is malformed; the message names the entry (still a ``ValueError``)."""


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in {**base, **override}.items()}


def load_topics(path: Path = TOPICS_FILE) -> list[TopicSpec]:
    """Every topic of ``path``, dead-letter topics included, in file order."""
    document = yaml.safe_load(path.read_text()) or {}
    defaults = document.get("defaults", {})
    dead = document.get("dead_letter", {})
    specs: list[TopicSpec] = []
    for entry in document.get("topics", []):
        name = entry.get("name")
        if not name:
            raise TopicsFileError(f"{path}: a topic without a name: {entry}")
        unknown = [e for e in entry.get("events", []) if e not in EVENT_TYPES]
        if unknown:
            raise TopicsFileError(f"{path}: topic {name}: unknown event subjects {unknown}")
        config = _merged(defaults.get("config", {}), entry.get("config", {}))
        replication = int(entry.get("replication_factor", defaults.get("replication_factor", 1)))
        specs.append(
            TopicSpec(
                name=name,
                partitions=int(entry.get("partitions", defaults.get("partitions", 1))),
                replication_factor=replication,
                config=config,
                events=tuple(entry.get("events", [])),
            )
        )
        if entry.get("dead_letter"):
            specs.append(
                TopicSpec(
                    name=f"{name}{DEAD_LETTER_SUFFIX}",
                    partitions=int(dead.get("partitions", 1)),
                    replication_factor=replication,
                    config=_merged(config, dead.get("config", {})),
                    dead_letter_of=name,
                )
            )
    return specs


@cache
def _topic_by_subject() -> dict[str, str]:
    return {subject: spec.name for spec in load_topics() for subject in spec.events}


def topic_for(event_type: type[Event] | str) -> str:
    """The topic that carries ``event_type`` (a class or its subject)."""
    subject = event_type if isinstance(event_type, str) else event_type.SUBJECT
    try:
        return _topic_by_subject()[subject]
    except KeyError:
        raise TopicsFileError(f"no topic in {TOPICS_FILE.name} carries {subject}") from None
