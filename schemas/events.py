"""Typed events: the only way services build what goes on a topic.

Each class mirrors the current version of one Avro subject (``schemas/avro/<SUBJECT>/``) field
for field, in order; the codecs check this when they are built, so a schema change that the class
does not follow fails at start-up, not on the wire. Build events with ``Cls.new(...)``, which
fills the envelope (a UUIDv7 ``event_id``, ``occurred_at`` = now in UTC, ``event_type``,
``schema_version``)::

    event = AuditEvent.new(
        tenant_id="t-42", producer="billing-api",
        actor_id="u-1", action="invoice.update", resource_type="invoice", resource_id="inv-9",
        outcome=AuditOutcome.SUCCESS,
    )
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Self

import uuid6

from schemas.errors import ValidationError

__all__ = [
    "EVENT_TYPES",
    "AnalyticsAlert",
    "AnalyticsEvent",
    "AuditEvent",
    "AuditOutcome",
    "ChangeKind",
    "EntityChanged",
    "Event",
    "NotificationChannel",
    "NotificationRequested",
]

_ENVELOPE_SET_BY_NEW = frozenset({"event_id", "event_type", "schema_version"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """The envelope every event shares. Not sent on its own: use one of the subclasses."""

    SUBJECT: ClassVar[str]
    """Schema subject, the directory under ``schemas/avro/``; also the value of `event_type`."""
    KIND: ClassVar[str]
    """Short family name: "audit", "analytics", "notification" or "entity"."""
    SCHEMA_VERSION: ClassVar[int]
    """The schema version this class follows: the subject's highest ``v<N>.avsc``."""

    event_id: str
    """UUIDv7 string; the dedupe key downstream."""
    event_type: str
    tenant_id: str
    occurred_at: datetime
    """When the fact happened, timezone-aware (decoded events carry UTC)."""
    producer: str
    schema_version: int
    """Version the record was written with: `SCHEMA_VERSION` when built here, possibly an older
    one when decoded. The serializer always writes the version it encodes with."""

    @property
    def key(self) -> bytes:
        """Kafka message key: records with the same key keep their order (same partition)."""
        return self.tenant_id.encode()

    @classmethod
    def new(
        cls,
        *,
        tenant_id: str,
        producer: str,
        occurred_at: datetime | None = None,
        **fields: Any,
    ) -> Self:
        """Build an event with a fresh UUIDv7 id, ``occurred_at`` = now (UTC) unless given.

        Raises `ValidationError` naming the field when a required field is missing or an unknown
        one is passed. Types are checked by the serializer, before anything is sent.
        """
        if not hasattr(cls, "SUBJECT"):
            raise ValidationError(
                f"{cls.__name__} is not an event type: use one of its subclasses", field=None
            )
        names = {f.name: f for f in dataclasses.fields(cls)}
        for name in fields:
            if name in _ENVELOPE_SET_BY_NEW:
                raise ValidationError(
                    f"{cls.SUBJECT}: {name} is set by new(), do not pass it",
                    field=name,
                    event_type=cls.SUBJECT,
                )
            if name not in names:
                raise ValidationError(
                    f"{cls.SUBJECT}: unknown field {name!r}", field=name, event_type=cls.SUBJECT
                )
        missing = [
            f.name
            for f in names.values()
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name not in fields
            and f.name not in _ENVELOPE_FIELDS
        ]
        if missing:
            raise ValidationError(
                f"{cls.SUBJECT}: missing required field(s): {', '.join(missing)}",
                field=missing[0],
                event_type=cls.SUBJECT,
            )
        return cls(
            event_id=str(uuid6.uuid7()),
            event_type=cls.SUBJECT,
            tenant_id=tenant_id,
            occurred_at=datetime.now(UTC) if occurred_at is None else occurred_at,
            producer=producer,
            schema_version=cls.SCHEMA_VERSION,
            **fields,
        )


_ENVELOPE_FIELDS = frozenset(f.name for f in dataclasses.fields(Event))


class AuditOutcome(StrEnum):
    """How an audited action ended."""

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DENIED = "DENIED"


class NotificationChannel(StrEnum):
    """How a notification is delivered."""

    EMAIL = "EMAIL"
    WEBHOOK = "WEBHOOK"


class ChangeKind(StrEnum):
    """What happened to an entity."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent(Event):
    """Something a principal did to a resource, kept for compliance (append-only)."""

    SUBJECT: ClassVar[str] = "audit_event"
    KIND: ClassVar[str] = "audit"
    SCHEMA_VERSION: ClassVar[int] = 1

    actor_id: str
    action: str
    """Dotted verb phrase, e.g. ``invoice.update``."""
    resource_type: str
    resource_id: str
    outcome: AuditOutcome
    ip: str | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalyticsEvent(Event):
    """A product-usage event (``page_view``, ``checkout_completed``, ...)."""

    SUBJECT: ClassVar[str] = "analytics_event"
    KIND: ClassVar[str] = "analytics"
    SCHEMA_VERSION: ClassVar[int] = 2

    name: str
    user_id: str | None = None
    session_id: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    value: float | None = None
    platform: str = "unknown"
    """Client platform (``web``, ``ios``, ...); added in v2, v1 records read as ``unknown``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NotificationRequested(Event):
    """A request to notify someone; delivered at most once per `effective_dedupe_key`."""

    SUBJECT: ClassVar[str] = "notification_requested"
    KIND: ClassVar[str] = "notification"
    SCHEMA_VERSION: ClassVar[int] = 2

    notification_id: str
    """UUID string, stable across retries of the same request."""
    channel: NotificationChannel
    recipient: str
    """An email address for EMAIL; for WEBHOOK the endpoint id (v1 records: a URL)."""
    template: str
    params: dict[str, str] = field(default_factory=dict)
    dedupe_key: str | None = None
    endpoint_id: str | None = None
    """WEBHOOK: UUID string of the tenant's registered endpoint (v2; ``None`` in v1)."""

    @property
    def effective_dedupe_key(self) -> str:
        """What the notifier deduplicates on: `dedupe_key`, else `notification_id`."""
        return self.dedupe_key if self.dedupe_key is not None else self.notification_id


@dataclass(frozen=True, slots=True, kw_only=True)
class EntityChanged(Event):
    """An entity was created, updated or deleted; `version` orders the changes of one entity."""

    SUBJECT: ClassVar[str] = "entity_changed"
    KIND: ClassVar[str] = "entity"
    SCHEMA_VERSION: ClassVar[int] = 1

    entity_type: str
    entity_id: str
    version: int
    change_kind: ChangeKind

    @property
    def key(self) -> bytes:
        """``tenant:entity_type:entity_id``: every change of one entity stays in order."""
        return f"{self.tenant_id}:{self.entity_type}:{self.entity_id}".encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalyticsAlert(Event):
    """A tenant's event rate did something unusual (found by the live analytics worker).

    `occurred_at` is the end of the window that fired, in event time. The live worker derives
    `event_id` from tenant, rule and window, so an alert emitted twice has one id.
    """

    SUBJECT: ClassVar[str] = "analytics_alert"
    KIND: ClassVar[str] = "analytics"
    SCHEMA_VERSION: ClassVar[int] = 1

    rule: str
    """Which detector fired, e.g. ``rate_spike``."""
    window_start: datetime
    """Start (inclusive) of the window that fired, event time, UTC."""
    window_seconds: int
    observed_count: int
    """Events of the tenant in the window, counted live (at least once)."""
    baseline_mean: float
    """Mean events per window over the `baseline_windows` windows before `window_start`."""
    baseline_windows: int
    threshold_factor: float
    """The rule's k: it fires when ``observed_count > k * baseline_mean``."""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.SUBJECT: cls
    for cls in (AuditEvent, AnalyticsEvent, NotificationRequested, EntityChanged, AnalyticsAlert)
}
"""Every event class by its subject."""
