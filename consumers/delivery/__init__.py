"""Notification delivery: pending rows of ``notifications`` → email and webhooks.

Flow of one notification: ``notifications`` row (written by the notifications sink) →
:class:`NotificationStore` claim with a lease → :class:`WebhookChannel` /
:class:`EmailChannel` send → attempt recorded, row ``sent`` / ``pending`` (retry with
backoff) / ``failed`` → :class:`NotificationDeadLetters` copies failed rows, with their
attempt history, to ``sidestream.notifications.dlq``. Webhooks go to registered
endpoints (:mod:`consumers.delivery.endpoints`, each with its own signing secret) through
the SSRF guard (:mod:`consumers.delivery.targets`). :func:`run_notify_worker` runs it
all; :mod:`consumers.delivery.admin` answers operators.
"""

from consumers.delivery.admin import (
    NotificationInfo,
    list_notifications,
    notification_counts,
    notification_summary,
    retry_failed,
)
from consumers.delivery.circuit import CircuitBreaker, CircuitBreakers, CircuitState, HostLimiter
from consumers.delivery.config import DeliveryConfig
from consumers.delivery.dead_letters import NotificationDeadLetters, notification_dead_letter_topic
from consumers.delivery.endpoints import (
    EndpointRow,
    EndpointStore,
    SecretBox,
    SecretBoxError,
    new_signing_secret,
)
from consumers.delivery.errors import (
    DeadLetterFlushError,
    DeliveryError,
    RecipientError,
    SchemaNotReadyError,
    SignatureError,
    TemplateError,
)
from consumers.delivery.metrics import DeliveryMetrics
from consumers.delivery.policy import AttemptResult, Decision, Outcome, RetryPolicy, Verdict
from consumers.delivery.process import build_channels, run_notify_worker
from consumers.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, sign_all, verify
from consumers.delivery.smtp import EmailChannel, SmtpOptions
from consumers.delivery.store import EndpointTarget, Notification, NotificationStore
from consumers.delivery.targets import (
    PinnedBackend,
    PinnedTransport,
    Resolver,
    Target,
    TargetGuard,
    TargetRefusedError,
    redact_url,
    refusal_of,
)
from consumers.delivery.templates import (
    EmailTemplate,
    RenderedEmail,
    TemplateRegistry,
    default_templates,
)
from consumers.delivery.webhook import WebhookChannel, new_http_client, webhook_body
from consumers.delivery.worker import DeliveryWorker

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "AttemptResult",
    "CircuitBreaker",
    "CircuitBreakers",
    "CircuitState",
    "DeadLetterFlushError",
    "Decision",
    "DeliveryConfig",
    "DeliveryError",
    "DeliveryMetrics",
    "DeliveryWorker",
    "EmailChannel",
    "EmailTemplate",
    "EndpointRow",
    "EndpointStore",
    "EndpointTarget",
    "HostLimiter",
    "Notification",
    "NotificationDeadLetters",
    "NotificationInfo",
    "NotificationStore",
    "Outcome",
    "PinnedBackend",
    "PinnedTransport",
    "RecipientError",
    "RenderedEmail",
    "Resolver",
    "RetryPolicy",
    "SchemaNotReadyError",
    "SecretBox",
    "SecretBoxError",
    "SignatureError",
    "SmtpOptions",
    "Target",
    "TargetGuard",
    "TargetRefusedError",
    "TemplateError",
    "TemplateRegistry",
    "Verdict",
    "WebhookChannel",
    "build_channels",
    "default_templates",
    "list_notifications",
    "new_http_client",
    "new_signing_secret",
    "notification_counts",
    "notification_dead_letter_topic",
    "notification_summary",
    "redact_url",
    "refusal_of",
    "retry_failed",
    "run_notify_worker",
    "sign",
    "sign_all",
    "verify",
    "webhook_body",
]
