"""Client factories for Kafka, Postgres and Redis, built from :class:`Settings`.

This is the one place where settings become librdkafka's dotted keys, a psycopg pool or
a Redis connection pool, so security options and timeouts are applied everywhere alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import psycopg
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool

from runtime.errors import ConfigError
from runtime.outages import install_pool_log_filter, reporter_for
from runtime.settings import SCHEMA_PATTERN, Settings

LOCAL_FETCH_WAIT_MS = 10

_Client = TypeVar("_Client", Producer, Consumer, AdminClient)
_PROPERTY = re.compile(r'property:?\s*"?(?P<name>[\w.-]+)"?', re.IGNORECASE)


def kafka_log_bridge(profile: Literal["local", "production"]) -> dict[str, Any]:
    """librdkafka's ``logger`` and ``error_cb`` for a client: the process's
    :class:`~runtime.outages.KafkaLogReporter` for ``profile``.

    Every Kafka client the project builds carries these (via :func:`kafka_common_config`,
    or directly where a tool builds its own config): without them librdkafka prints raw
    ``%6|…|FAIL|`` lines on stderr, one per failed connection attempt.
    """
    reporter = reporter_for(profile)
    return {"logger": reporter, "error_cb": reporter.error}


def kafka_common_config(settings: Settings) -> dict[str, Any]:
    """Connection and security properties shared by every Kafka client.

    librdkafka's log and error events go to the process's
    :class:`~runtime.outages.KafkaLogReporter` (one readable, rate-limited line per
    problem) instead of raw ``%3|FAIL`` lines on stderr. A client that needs its own
    ``error_cb`` may override it and pass non-fatal errors to
    ``reporter_for(profile).error``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "security.protocol": settings.kafka_security_protocol,
        **kafka_log_bridge(settings.profile),
    }
    if settings.kafka_sasl_mechanism:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username:
        config["sasl.username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_ca_location is not None:
        config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
    config.update(settings.kafka_extra)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """An idempotent, acks=all producer config; ``overrides`` use librdkafka's keys."""
    config = kafka_common_config(settings)
    config.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            # Longer locally (settings.linger_ms): fewer, larger batches for a broker that
            # reads partitions of many one-record batches very slowly.
            "linger.ms": settings.linger_ms,
        }
    )
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A manual-commit consumer config for ``group_id``."""
    config = kafka_common_config(settings)
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": min(3000, settings.session_timeout_ms // 3),
        }
    )
    if settings.profile == "local":
        # The local broker holds every fetch for the full fetch.wait.max.ms even when data
        # is waiting (librdkafka's default 500 ms): keep it short so delivery is prompt.
        config["fetch.wait.max.ms"] = LOCAL_FETCH_WAIT_MS
    config.update(overrides)
    return config


def build_kafka_client(
    factory: Callable[[dict[str, Any]], _Client], config: dict[str, Any], settings: Settings
) -> _Client:
    """``factory(config)``, with librdkafka's refusal of a property turned into a
    :class:`ConfigError` that names the setting it came from."""
    try:
        return factory(config)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError) or error.code() not in (
            KafkaError._INVALID_ARG,
            KafkaError._NOT_IMPLEMENTED,
        ):
            raise
        message = error.str()
        match = _PROPERTY.search(message)
        name = match.group("name") if match else None
        if name is not None and name in settings.kafka_extra:
            where = "SIDESTREAM_KAFKA_EXTRA"
        else:
            where = "the SIDESTREAM_KAFKA_* settings"
        raise ConfigError(
            f"invalid Kafka client configuration: {message} — check {where}"
        ) from None


def kafka_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer (:func:`producer_config`).

    Raises:
        ConfigError: librdkafka refused a property (e.g. from ``SIDESTREAM_KAFKA_EXTRA``).
    """
    return build_kafka_client(Producer, producer_config(settings, **overrides), settings)


def kafka_consumer(settings: Settings, group_id: str, **overrides: Any) -> Consumer:
    """A manual-commit consumer (:func:`consumer_config`); ``ConfigError`` as above."""
    return build_kafka_client(Consumer, consumer_config(settings, group_id, **overrides), settings)


def kafka_admin(settings: Settings, **overrides: Any) -> AdminClient:
    """An admin client; ``ConfigError`` as above."""
    config = kafka_common_config(settings)
    config.update(overrides)
    return build_kafka_client(AdminClient, config, settings)


def kafka_reachable(settings: Settings) -> bool:
    """``False`` while this process's Kafka clients report the brokers unreachable (for
    readiness checks)."""
    return reporter_for(settings.profile).reachable()


def check_schema(schema: str) -> str:
    """``schema`` if it is a plain lower-case identifier (the pattern of
    ``SIDESTREAM_POSTGRES_SCHEMA``), else ``ValueError``: it goes into libpq options."""
    if not SCHEMA_PATTERN.fullmatch(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: expected lower-case letters, digits and _ "
            "(up to 63, not starting with a digit)"
        )
    return schema


def _search_path(schema: str | None) -> dict[str, Any]:
    # Every connection resolves unqualified table names in the configured schema, so the
    # same SQL serves the live tables, a shadow schema and a test's private schema. The
    # name goes into a libpq options string: anything but a plain identifier could add
    # options of its own ("public -c statement_timeout=1"), so it is checked.
    return {"options": f"-c search_path={check_schema(schema)}"} if schema else {}


def postgres_connect(
    settings: Settings, *, schema: str | None = None, **kwargs: Any
) -> psycopg.Connection[Any]:
    """One Postgres connection (for CLI commands and tools), searching ``schema``
    (default: the configured one) first."""
    return psycopg.connect(
        settings.postgres_dsn.get_secret_value(),
        **_search_path(schema or settings.postgres_schema),
        **kwargs,
    )


def postgres_pool(
    settings: Settings,
    *,
    name: str = "sidestream",
    schema: str | None = None,
    max_size: int | None = None,
    timeout: float = 10.0,
) -> ConnectionPool:
    """An opened psycopg pool sized from settings, using ``schema`` (default: the
    configured one) as search path; close it on shutdown."""
    # The pool logs each failed reconnection; the filter makes that one line a minute.
    install_pool_log_filter(settings.profile)
    pool = ConnectionPool(
        settings.postgres_dsn.get_secret_value(),
        min_size=min(settings.postgres_pool_min, max_size or settings.postgres_pool_max),
        max_size=max_size or settings.postgres_pool_max,
        name=name,
        open=False,
        timeout=timeout,
        kwargs=_search_path(schema or settings.postgres_schema),
    )
    # wait=False: a pool must be buildable while the database is down; connections are
    # made (and retried by the pool) in the background.
    pool.open(wait=False)
    return pool


def redis_client(settings: Settings, **kwargs: Any) -> redis.Redis:
    """A Redis client over its own connection pool."""
    options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
    options.update(kwargs)
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), **options)
