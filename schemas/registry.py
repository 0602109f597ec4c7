"""Schema registries: where Confluent-framed records find their writer schema by id.

The serde needs two calls from a registry, described by `SchemaRegistry`:

- `ConfluentSchemaRegistry` talks to a Confluent-compatible registry through
  ``confluent_kafka.schema_registry`` (a ``mock://name`` URL gives confluent-kafka's in-process
  mock; note that each client instance has its own mock store);
- `InMemorySchemaRegistry` keeps schemas in this process, for tests and local runs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from schemas.errors import RegistryError, UnknownSchemaError

__all__ = ["ConfluentSchemaRegistry", "InMemorySchemaRegistry", "SchemaRegistry"]

_CREDENTIALS = re.compile(r"//[^/@]*@")


@runtime_checkable
class SchemaRegistry(Protocol):
    """What the serializer and deserializer need from a schema registry."""

    def register(self, subject: str, schema: str) -> int:
        """Register Avro `schema` (JSON text) under `subject` if new; return its id.

        Idempotent: registering the same schema again returns the same id.
        Raises `RegistryError` if the registry cannot be reached or refuses the schema.
        """
        ...

    def lookup(self, schema_id: int) -> str:
        """The Avro schema (JSON text) with this id.

        Raises `UnknownSchemaError` if there is none, `RegistryError` on other failures.
        """
        ...


class InMemorySchemaRegistry:
    """A schema registry held in process memory. Thread-safe.

    Like Confluent's, ids are global: the same schema text under two subjects has one id.
    """

    url = "memory://"
    """Where it lives, for messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, str] = {}
        self._subjects: dict[str, list[int]] = {}
        self._levels: dict[str, str] = {}

    def register(self, subject: str, schema: str) -> int:
        with self._lock:
            schema_id = self._ids.get(schema)
            if schema_id is None:
                schema_id = len(self._schemas) + 1
                self._ids[schema] = schema_id
                self._schemas[schema_id] = schema
            versions = self._subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            return schema_id

    def lookup(self, schema_id: int) -> str:
        with self._lock:
            try:
                return self._schemas[schema_id]
            except KeyError:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not registered", schema_id=schema_id
                ) from None

    def subject_versions(self, subject: str) -> list[int]:
        """Ids registered under `subject`, oldest first."""
        with self._lock:
            return list(self._subjects.get(subject, ()))

    def registered(self, subject: str) -> list[tuple[int, str]]:
        """``(version, schema text)`` of every schema under `subject`, oldest first."""
        with self._lock:
            ids = self._subjects.get(subject, ())
            return [(number, self._schemas[i]) for number, i in enumerate(ids, start=1)]

    def compatibility(self, subject: str) -> str | None:
        """The compatibility level of `subject` (its own, else the global one), if set."""
        with self._lock:
            return self._levels.get(subject, self._levels.get(""))

    def set_compatibility(self, subject: str | None, level: str) -> None:
        """Set the compatibility level of `subject`, or the global one when None."""
        with self._lock:
            self._levels["" if subject is None else subject] = level.upper()


def _redacted(url: str) -> str:
    """`url` without credentials (``user:password@``), fit for messages and logs."""
    return _CREDENTIALS.sub("//***@", url)


class ConfluentSchemaRegistry:
    """A Confluent-compatible schema registry, through ``confluent_kafka.schema_registry``.

    `config` takes the keys of ``SchemaRegistryClient`` (``basic.auth.user.info``, ...); its
    ``url``, if present, must agree with `url`. Needs the ``confluent-kafka[schemaregistry]``
    extra; without it, construction raises `RegistryError` saying so.
    """

    def __init__(self, *, url: str, config: Mapping[str, Any] | None = None) -> None:
        conf = dict(config or {})
        if conf.setdefault("url", url) != url:
            raise ValueError(
                f"contradictory schema registry URLs: url={_redacted(url)!r}, "
                f"config['url']={_redacted(str(conf['url']))!r}"
            )
        self.url = _redacted(url)
        try:
            from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
            from confluent_kafka.schema_registry.error import SchemaRegistryError
        except ImportError as exc:
            raise RegistryError(
                f"cannot use the schema registry at {self.url}: {exc}. Install "
                "'confluent-kafka[schemaregistry]'",
                url=self.url,
            ) from exc
        # Typed loosely: the optional extra may be missing when type-checking too.
        self._schema_cls: Any = Schema
        self._registry_error: type[Exception] = SchemaRegistryError
        # new_client gives the in-process mock for mock:// URLs, a REST client otherwise.
        self._client: Any = SchemaRegistryClient.new_client(conf)

    def register(self, subject: str, schema: str) -> int:
        try:
            return int(self._client.register_schema(subject, self._schema_cls(schema, "AVRO")))
        except Exception as exc:
            # Network errors come from the HTTP library, refusals as SchemaRegistryError.
            raise RegistryError(
                f"schema registry {self.url} did not register a schema under {subject!r}: {exc}",
                url=self.url,
            ) from exc

    def registered(self, subject: str) -> list[tuple[int, str]]:
        """``(version, schema text)`` of every schema under `subject`, oldest first; empty when
        the registry has no such subject. Raises `RegistryError` on other failures."""
        try:
            numbers = self._client.get_versions(subject)
            found = [self._client.get_version(subject, number) for number in numbers]
        except Exception as exc:
            if getattr(exc, "http_status_code", None) == 404:
                return []
            raise RegistryError(
                f"schema registry {self.url} failed to list the versions of {subject!r}: {exc}",
                url=self.url,
            ) from exc
        return [(int(r.version), str(r.schema.schema_str)) for r in found]

    def compatibility(self, subject: str) -> str | None:
        """The compatibility level that applies to `subject` (its own, else the global one);
        None when the registry does not say (confluent-kafka's mock keeps no configuration).
        Raises `RegistryError` when the registry cannot be asked."""
        try:
            try:
                config = self._client.get_config(subject)
            except self._registry_error as exc:
                if getattr(exc, "http_status_code", None) != 404:
                    raise
                config = self._client.get_config()  # no level of its own: the global one
        except Exception as exc:
            raise RegistryError(
                f"schema registry {self.url} failed to give the compatibility of {subject!r}: "
                f"{exc}",
                url=self.url,
            ) from exc
        if config is None:
            return None
        level = config.compatibility_level or config.compatibility
        return None if level is None else str(getattr(level, "value", level)).upper()

    def lookup(self, schema_id: int) -> str:
        try:
            found = self._client.get_schema(schema_id)
        except self._registry_error as exc:
            if getattr(exc, "http_status_code", None) == 404:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not in the schema registry {self.url}",
                    schema_id=schema_id,
                ) from exc
            raise RegistryError(
                f"schema registry {self.url} failed to look up id {schema_id}: {exc}",
                url=self.url,
            ) from exc
        except Exception as exc:
            raise RegistryError(
                f"schema registry {self.url} failed to look up id {schema_id}: {exc}",
                url=self.url,
            ) from exc
        if found.schema_type not in (None, "AVRO"):
            raise UnknownSchemaError(
                f"schema id {schema_id} is a {found.schema_type} schema, not Avro",
                schema_id=schema_id,
            )
        return str(found.schema_str)
