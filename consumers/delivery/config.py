"""`DeliveryConfig`: every knob of the delivery workers, typed, frozen, validated when built.

Defaults work locally (an SMTP server on 127.0.0.1:1025, plain HTTP webhooks allowed).
:meth:`DeliveryConfig.from_settings` maps each ``delivery_<field>`` setting
(``SIDESTREAM_DELIVERY_<FIELD>``) to its field by name, one line each; a new setting is
added there too (a test checks that every ``delivery_*`` setting is mapped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.delivery.endpoints import LOCAL_ENDPOINT_SECRETS_KEY, SecretBox
from consumers.delivery.targets import Resolver, TargetGuard, system_resolver
from runtime import Settings
from runtime.retry import Backoff

#: The default signing secret: fine locally, refused by the worker in production.
LOCAL_SIGNING_SECRET = "sidestream-local-signing-secret"  # noqa: S105  (a known local default)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryConfig:
    """How notifications are claimed, sent, retried and given up on; durations in seconds."""

    # --- email (SMTP) ------------------------------------------------------------------
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = False
    """Upgrade the connection with STARTTLS (required when the relay demands it)."""
    smtp_from: str = "Sidestream <notifications@sidestream.local>"
    smtp_timeout_s: float = 10.0
    """Whole SMTP conversation (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, QUIT)."""
    message_id_domain: str = "sidestream.local"
    """Right-hand side of ``Message-ID: <notification_id@domain>`` (stable across retries)."""

    # --- webhooks (HTTP) -------------------------------------------------------------
    webhook_signing_secret: str = field(default=LOCAL_SIGNING_SECRET, repr=False)
    webhook_timeout_s: float = 10.0
    """Whole request, connect to last byte of the response."""
    webhook_connect_timeout_s: float = 3.0
    webhook_require_https: bool = False
    """Refuse plain-HTTP URLs (a permanent failure); always on in the production profile."""
    allow_private_targets: bool = False
    """Let webhooks reach loopback, private, link-local, ... addresses (the SSRF guard of
    :mod:`consumers.delivery.targets` off): local development and tests only."""
    endpoint_secrets_key: str = field(default=LOCAL_ENDPOINT_SECRETS_KEY, repr=False)
    """Encrypts endpoints' signing secrets at rest
    (:class:`~consumers.delivery.endpoints.SecretBox`); API and notify worker share it."""

    # --- retries -------------------------------------------------------------------------
    max_attempts: int = 8
    """Attempts per delivery budget (a manual retry starts a new budget)."""
    max_age_s: float = 86_400.0
    """No retry is scheduled past this age (counted from ``created_at``, or the last
    manual retry); the notification fails as ``expired`` instead."""
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 600.0
    """Delay before retry n is uniform in [0, min(cap, base·2ⁿ⁻¹)] (full jitter)."""
    max_retry_after_s: float = 3600.0
    """A ``Retry-After`` longer than this is clamped to it."""

    # --- concurrency and circuit breakers --------------------------------------------
    per_host_concurrency: int = 4
    """Deliveries in flight per destination (webhook host:port, or the SMTP relay)."""
    max_in_flight: int = 64
    """Claimed notifications per worker (sending or waiting for their host's slot)."""
    claim_batch: int = 16
    """Rows per claim query; keep it below ``max_in_flight`` so one slow host cannot
    fill a worker's slots."""
    circuit_failure_threshold: int = 5
    """Consecutive failures (5xx, timeouts, connection errors) that open a circuit."""
    circuit_cooldown_s: float = 30.0
    """An open circuit lets one probe through (half-open) after this long."""

    # --- claims and loop ---------------------------------------------------------------
    lease_s: float = 60.0
    """How long a claim is exclusive. A send only starts if it can finish (its channel's
    timeout plus ``lease_margin_s``) before the lease ends."""
    lease_margin_s: float = 5.0
    poll_interval_s: float = 2.0
    """Longest idle wait without a NOTIFY (the fallback when one is missed)."""
    dead_letter_interval_s: float = 5.0
    """How often failed rows not yet on the dead-letter topic are looked for."""
    dead_letter_batch: int = 100
    dead_letter_timeout_s: float = 10.0
    metrics_interval_s: float = 5.0
    shutdown_deadline_s: float = 20.0
    """SIGTERM: deliveries in flight may finish within this; the rest are released."""
    db_pool_size: int = 4
    db_timeout_s: float = 10.0
    unready_after_s: float = 30.0
    """Postgres unanswered this long (at least 3 idle waits): ``/readyz`` says not ready;
    the worker keeps retrying (:func:`run_notify_worker`: the settings'
    ``consumer_retry_deadline_s``, like every worker)."""

    def __post_init__(self) -> None:
        for name in (
            "smtp_port",
            "max_attempts",
            "per_host_concurrency",
            "max_in_flight",
            "claim_batch",
            "circuit_failure_threshold",
            "dead_letter_batch",
            "db_pool_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "smtp_timeout_s",
            "webhook_timeout_s",
            "webhook_connect_timeout_s",
            "max_age_s",
            "backoff_base_s",
            "backoff_cap_s",
            "max_retry_after_s",
            "circuit_cooldown_s",
            "lease_s",
            "poll_interval_s",
            "dead_letter_interval_s",
            "dead_letter_timeout_s",
            "metrics_interval_s",
            "shutdown_deadline_s",
            "db_timeout_s",
            "unready_after_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lease_margin_s < 0:
            raise ValueError(f"lease_margin_s must not be negative, got {self.lease_margin_s}")
        if self.claim_batch > self.max_in_flight:
            raise ValueError(
                f"claim_batch ({self.claim_batch}) must not exceed max_in_flight "
                f"({self.max_in_flight})"
            )
        longest_send = max(self.smtp_timeout_s, self.webhook_timeout_s)
        if self.lease_s < 2 * (longest_send + self.lease_margin_s):
            # A claim must outlive a send with room to spare, or a slow send would let a
            # second worker claim the row while the first is still sending.
            raise ValueError(
                f"lease_s ({self.lease_s}) must be at least twice the longest send "
                f"timeout plus lease_margin_s ({longest_send + self.lease_margin_s})"
            )
        if not self.webhook_signing_secret:
            raise ValueError("webhook_signing_secret must not be empty")
        if len(self.endpoint_secrets_key) < 16:
            raise ValueError("endpoint_secrets_key must be at least 16 characters")

    @property
    def backoff(self) -> Backoff:
        return Backoff(base_s=self.backoff_base_s, cap_s=self.backoff_cap_s)

    def target_guard(self, *, production: bool, resolver: Resolver | None = None) -> TargetGuard:
        """The webhook target policy (registration and delivery share it); in production
        HTTPS is required and private targets are refused whatever the settings say."""
        return TargetGuard(
            allow_private=self.allow_private_targets and not production,
            require_https=self.webhook_require_https or production,
            resolver=resolver or system_resolver,
        )

    def secret_box(self) -> SecretBox:
        """Seals and opens endpoint signing secrets with ``endpoint_secrets_key``."""
        return SecretBox(self.endpoint_secrets_key)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> DeliveryConfig:
        """Build from field names (e.g. a JSON object); unknown names are rejected.

        Raises:
            ValueError: an unknown name or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DeliveryConfig fields: {', '.join(unknown)}")
        return cls(**{name: _plain(value) for name, value in values.items()})

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        """Every ``delivery_<field>`` setting; defaults for the fields that are no setting.

        Raises:
            ValueError: an invalid combination (e.g. a lease too short for the timeouts).
        """
        s = settings
        return cls.from_mapping(
            {
                "smtp_host": s.delivery_smtp_host,
                "smtp_port": s.delivery_smtp_port,
                "smtp_username": s.delivery_smtp_username,
                "smtp_password": s.delivery_smtp_password,
                "smtp_starttls": s.delivery_smtp_starttls,
                "smtp_from": s.delivery_smtp_from,
                "smtp_timeout_s": s.delivery_smtp_timeout_s,
                "webhook_signing_secret": s.delivery_webhook_signing_secret,
                "webhook_timeout_s": s.delivery_webhook_timeout_s,
                "webhook_connect_timeout_s": s.delivery_webhook_connect_timeout_s,
                "webhook_require_https": s.delivery_webhook_require_https,
                "allow_private_targets": s.delivery_allow_private_targets,
                "endpoint_secrets_key": s.delivery_endpoint_secrets_key,
                "max_attempts": s.delivery_max_attempts,
                "max_age_s": s.delivery_max_age_s,
                "backoff_base_s": s.delivery_backoff_base_s,
                "backoff_cap_s": s.delivery_backoff_cap_s,
                "per_host_concurrency": s.delivery_per_host_concurrency,
                "max_in_flight": s.delivery_max_in_flight,
                "circuit_failure_threshold": s.delivery_circuit_failure_threshold,
                "circuit_cooldown_s": s.delivery_circuit_cooldown_s,
                "lease_s": s.delivery_lease_s,
            }
        )

    def replace(self, **changes: Any) -> DeliveryConfig:
        """A validated copy with some fields changed.

        Raises:
            ValueError: an unknown name or an invalid value.
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown DeliveryConfig fields: {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: _plain(v) for k, v in changes.items()})


def _plain(value: Any) -> Any:
    # pydantic's SecretStr (the settings' type for passwords and secrets) → its value.
    secret = getattr(value, "get_secret_value", None)
    return secret() if callable(secret) else value
