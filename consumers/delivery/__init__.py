"""Notification delivery: pending rows of ``notifications`` → email and webhooks.

Flow of one notification: ``notifications`` row (written by the notifications sink) →
:class:`NotificationStore` claim with a lease → :class:`WebhookChannel` /
:class:`EmailChannel` send → attempt recorded, row ``sent`` / ``pending`` (retry with
backoff) / ``failed`` → :class:`NotificationDeadLetters` copies failed rows, with their
attempt history, to ``sidestream.notifications.dlq``. :func:`run_notify_worker` runs it
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
from consumers.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, verify
from consumers.delivery.smtp import EmailChannel, SmtpOptions
from consumers.delivery.store import Notification, NotificationStore
from consumers.delivery.templates import (
    EmailTemplate,
    RenderedEmail,
    TemplateRegistry,
    default_templates,
)
from consumers.delivery.webhook import WebhookChannel, webhook_body
from consumers.delivery.worker import DeliveryWorker, build_channels, run_notify_worker

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
    "HostLimiter",
    "Notification",
    "NotificationDeadLetters",
    "NotificationInfo",
    "NotificationStore",
    "Outcome",
    "RecipientError",
    "RenderedEmail",
    "RetryPolicy",
    "SchemaNotReadyError",
    "SignatureError",
    "SmtpOptions",
    "TemplateError",
    "TemplateRegistry",
    "Verdict",
    "WebhookChannel",
    "build_channels",
    "default_templates",
    "list_notifications",
    "notification_counts",
    "notification_dead_letter_topic",
    "notification_summary",
    "retry_failed",
    "run_notify_worker",
    "sign",
    "verify",
    "webhook_body",
]
