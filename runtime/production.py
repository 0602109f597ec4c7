"""What the ``production`` profile refuses: the one place that says so.

Every process calls :func:`check_production` at start (the API, every worker); in the
``local`` profile it does nothing. In ``production`` it refuses, all in one line:

- a secret left at its local default (the webhook signing secret, the API key hashing
  secret) or a password that is a well-known default (``postgres``, ``change-me``, ...)
  in the Postgres DSN, the Redis URL, the Kafka SASL or SMTP password;
- the API without authentication (``SIDESTREAM_API_AUTH=none``), or a JWKS fetched
  over plain HTTP;
- plain-HTTP webhooks (``SIDESTREAM_DELIVERY_WEBHOOK_REQUIRE_HTTPS`` false);
- Postgres without TLS (``sslmode`` other than ``require``/``verify-ca``/``verify-full``)
  and Redis without TLS (``redis://`` instead of ``rediss://``).

The transport checks can be waived one by one, explicitly, with
``SIDESTREAM_PRODUCTION_ALLOW_INSECURE`` (``postgres-plaintext``, ``redis-plaintext``,
``http-webhooks``): e.g. for a database reached over a Unix socket or a sidecar that
terminates TLS. Default secrets and a missing authentication cannot be waived.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from runtime.errors import ConfigError
from runtime.settings import ENV_PREFIX, LOCAL_API_KEY_HASH_SECRET, Settings

__all__ = ["DEFAULT_PASSWORDS", "check_production", "production_problems"]

#: Passwords nobody should run production with (examples, images' defaults).
DEFAULT_PASSWORDS = frozenset(
    {
        "",
        "admin",
        "change-me",
        "changeme",
        "password",
        "postgres",
        "redis",
        "secret",
        "sidestream",
        "valkey",
        "...",
    }
)
#: Must match consumers.delivery.config.LOCAL_SIGNING_SECRET (runtime imports nothing).
_LOCAL_SIGNING_SECRET = "sidestream-local-signing-secret"  # noqa: S105 - the refused default
#: Must match consumers.delivery.endpoints.LOCAL_ENDPOINT_SECRETS_KEY.
_LOCAL_ENDPOINT_SECRETS_KEY = "sidestream-local-endpoint-secrets-key"
_TLS_SSLMODES = frozenset({"require", "verify-ca", "verify-full"})

Component = Literal["api", "worker", "any"]


def _url_password(url: str) -> str | None:
    password = urlsplit(url).password
    return None if password is None else unquote(password)


def _postgres_tls(dsn: str) -> bool:
    parts = urlsplit(dsn)
    modes = parse_qs(parts.query).get("sslmode", [])
    return bool(modes) and modes[-1] in _TLS_SSLMODES


def production_problems(settings: Settings, component: Component = "any") -> list[str]:
    """Everything the production profile refuses in ``settings`` (empty: all fine, or
    not the production profile). Messages name the variable and the fix, never a value."""
    if settings.profile != "production":
        return []
    problems: list[str] = []
    allowed = settings.insecure_allowed

    def secret_default(variable: str, value: str, default: str) -> None:
        if value == default or value in DEFAULT_PASSWORDS:
            problems.append(f"set {ENV_PREFIX}{variable} (it is the local default)")

    secret_default(
        "DELIVERY_WEBHOOK_SIGNING_SECRET",
        settings.delivery_webhook_signing_secret.get_secret_value(),
        _LOCAL_SIGNING_SECRET,
    )
    secret_default(
        "API_KEY_HASH_SECRET",
        settings.api_key_hash_secret.get_secret_value(),
        LOCAL_API_KEY_HASH_SECRET,
    )
    secret_default(
        "DELIVERY_ENDPOINT_SECRETS_KEY",
        settings.delivery_endpoint_secrets_key.get_secret_value(),
        _LOCAL_ENDPOINT_SECRETS_KEY,
    )
    if settings.delivery_allow_private_targets:
        problems.append(
            f"unset {ENV_PREFIX}DELIVERY_ALLOW_PRIVATE_TARGETS (it turns the webhook SSRF "
            "guard off: local development only)"
        )
    dsn = settings.postgres_dsn.get_secret_value()
    if _url_password(dsn) in DEFAULT_PASSWORDS:
        problems.append(f"{ENV_PREFIX}POSTGRES_DSN has a default password; use a real one")
    redis_url = settings.redis_url.get_secret_value()
    if _url_password(redis_url) in DEFAULT_PASSWORDS:
        problems.append(f"{ENV_PREFIX}REDIS_URL has a default password; use a real one")
    for variable, secret in (
        ("KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
        ("DELIVERY_SMTP_PASSWORD", settings.delivery_smtp_password),
    ):
        if secret is not None and secret.get_secret_value() in DEFAULT_PASSWORDS:
            problems.append(f"{ENV_PREFIX}{variable} is a default password; use a real one")

    if component in ("api", "any") and settings.api_auth == "none":
        problems.append(f"{ENV_PREFIX}API_AUTH=none is refused in production; use keys")

    jwks = settings.api_jwt_jwks or ""
    if jwks.startswith("http://"):
        problems.append(f"{ENV_PREFIX}API_JWT_JWKS must be an https:// URL (or a file)")

    if not settings.delivery_webhook_require_https and "http-webhooks" not in allowed:
        problems.append(
            f"set {ENV_PREFIX}DELIVERY_WEBHOOK_REQUIRE_HTTPS=true (or allow http-webhooks "
            f"in {ENV_PREFIX}PRODUCTION_ALLOW_INSECURE)"
        )
    if not _postgres_tls(dsn) and "postgres-plaintext" not in allowed:
        problems.append(
            f"{ENV_PREFIX}POSTGRES_DSN needs ?sslmode=verify-full (or require/verify-ca; or "
            f"allow postgres-plaintext in {ENV_PREFIX}PRODUCTION_ALLOW_INSECURE)"
        )
    if urlsplit(redis_url).scheme != "rediss" and "redis-plaintext" not in allowed:
        problems.append(
            f"{ENV_PREFIX}REDIS_URL needs rediss:// (TLS; or allow redis-plaintext in "
            f"{ENV_PREFIX}PRODUCTION_ALLOW_INSECURE)"
        )
    return problems


def check_production(settings: Settings, component: Component = "any") -> None:
    """Refuse to start with what :func:`production_problems` finds.

    Raises:
        ConfigError: one line listing every problem (the CLI prints it and exits 2).
    """
    problems = production_problems(settings, component)
    if problems:
        raise ConfigError("production profile: " + "; ".join(problems))
