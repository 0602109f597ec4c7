"""Errors of the delivery workers: one small tree with structured fields.

Delivery *outcomes* (a 500, a timeout, a refused recipient) are not exceptions: channels
return them as :class:`~consumers.delivery.channels.AttemptResult`. These errors are for
what the caller must handle: a notification that cannot even be built, a signature that
does not verify, dead letters that were not acknowledged.
"""

from __future__ import annotations

from runtime.errors import SidestreamError


class DeliveryError(SidestreamError):
    """Base of the delivery package's errors."""


class TemplateError(DeliveryError):
    """A template is unknown or a parameter it needs is missing (a permanent failure)."""

    def __init__(self, template: str, message: str) -> None:
        super().__init__(f"template {template!r}: {message}")
        self.template = template


class RecipientError(DeliveryError):
    """The recipient is not a usable address or URL for its channel (a permanent failure)."""

    def __init__(self, channel: str, recipient: str, message: str) -> None:
        super().__init__(f"{channel} recipient {recipient!r}: {message}")
        self.channel = channel
        self.recipient = recipient


class SchemaNotReadyError(DeliveryError):
    """The schema lacks the delivery tables or columns: its migrations were not applied."""

    def __init__(self, schema: str | None, message: str) -> None:
        super().__init__(
            f"schema {schema or '(search path)'}: {message}; apply the consumers migrations "
            "first (sidestream db migrate)"
        )
        self.schema = schema


class SignatureError(DeliveryError):
    """A webhook signature header is malformed, too old, or does not match the body."""


class DeadLetterFlushError(DeliveryError):
    """Dead letters were not acknowledged in time; their rows stay marked for a retry."""

    def __init__(self, topic: str, failed: int, pending: int, errors: list[str]) -> None:
        super().__init__(
            f"{topic}: {failed} dead letters failed, {pending} unacknowledged: {errors[:3]}"
        )
        self.topic = topic
        self.failed = failed
        self.pending = pending
