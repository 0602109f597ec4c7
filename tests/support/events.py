"""Sample events: one typical event per type (every optional field set), a list with every
type and optional fields both set and left out, and numbered series for bulk tests.

``**overrides`` replace fields of the event (envelope fields included).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import uuid6

from schemas import (
    AnalyticsAlert,
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    EntityChanged,
    Event,
    NotificationChannel,
    NotificationRequested,
)

# --- one typical event per type ---------------------------------------------------------


def sample_audit(**overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-42",
        "producer": "billing-api",
        "actor_id": "user-123",
        "action": "invoice.update",
        "resource_type": "invoice",
        "resource_id": "inv-9876",
        "outcome": AuditOutcome.DENIED,
        "ip": "2001:db8::1",
        "details": {"field": "amount", "old": "10.00", "new": "12.50"},
    }
    return AuditEvent.new(**{**fields, **overrides})


def sample_analytics(**overrides: Any) -> AnalyticsEvent:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-42",
        "producer": "web",
        "name": "checkout_completed",
        "user_id": "user-1",
        "session_id": "sess-1",
        "properties": {"plan": "pro"},
        "value": 49.9,
        "platform": "ios",
    }
    return AnalyticsEvent.new(**{**fields, **overrides})


def sample_notification(**overrides: Any) -> NotificationRequested:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-42",
        "producer": "billing-api",
        "notification_id": str(uuid.uuid4()),
        "channel": NotificationChannel.EMAIL,
        "recipient": "finance@example.com",
        "template": "invoice_paid",
        "params": {"invoice": "inv-9876", "amount": "12.50"},
        "dedupe_key": "inv-9876-paid",
    }
    return NotificationRequested.new(**{**fields, **overrides})


def sample_entity(**overrides: Any) -> EntityChanged:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-42",
        "producer": "crm",
        "entity_type": "customer",
        "entity_id": "c-77",
        "version": 12,
        "change_kind": ChangeKind.DELETED,
    }
    return EntityChanged.new(**{**fields, **overrides})


def sample_alert(**overrides: Any) -> AnalyticsAlert:
    fields: dict[str, Any] = {
        "tenant_id": "tenant-42",
        "producer": "live-analytics",
        "occurred_at": datetime(2024, 5, 1, 12, 16, tzinfo=UTC),
        "rule": "rate_spike",
        "window_start": datetime(2024, 5, 1, 12, 15, tzinfo=UTC),
        "window_seconds": 60,
        "observed_count": 40,
        "baseline_mean": 4.0,
        "baseline_windows": 15,
        "threshold_factor": 3.0,
    }
    return AnalyticsAlert.new(**{**fields, **overrides})


def every_event_type() -> list[Event]:
    """Events of every type, with optional fields both set and left out."""
    return [
        sample_audit(),
        AuditEvent.new(
            tenant_id="t",
            producer="p",
            actor_id="svc",
            action="a",
            resource_type="r",
            resource_id="1",
            outcome=AuditOutcome.SUCCESS,
        ),
        sample_analytics(),
        AnalyticsEvent.new(tenant_id="tenant-42", producer="web", name="page_view"),
        sample_notification(),
        NotificationRequested.new(
            tenant_id="tenant-42",
            producer="billing-api",
            notification_id=str(uuid.uuid4()),
            channel=NotificationChannel.WEBHOOK,
            recipient="https://hooks.example.com/in",
            template="invoice_paid",
        ),
        sample_entity(),
        sample_alert(),
    ]


# --- numbered series: event i of many ---------------------------------------------------


def audit_event(i: int, **overrides: Any) -> AuditEvent:
    fields: dict[str, Any] = {
        "tenant_id": f"tenant-{i % 5}",
        "producer": "tests",
        "actor_id": f"user-{i % 11}",
        "action": "invoice.update",
        "resource_type": "invoice",
        "resource_id": f"inv-{i}",
        "outcome": AuditOutcome.SUCCESS,
    }
    fields.update(overrides)
    return AuditEvent.new(**fields)


def analytics_event(i: int, **overrides: Any) -> AnalyticsEvent:
    fields: dict[str, Any] = {
        "tenant_id": f"tenant-{i % 3}",
        "producer": "tests",
        "name": ("page_view", "click", "signup")[i % 3],
        "value": 1.5,
    }
    fields.update(overrides)
    return AnalyticsEvent.new(**fields)


def notification_event(i: int) -> NotificationRequested:
    if i % 3 == 0:  # every third one a webhook to a (made-up) registered endpoint
        endpoint = str(uuid.uuid5(uuid.NAMESPACE_URL, f"endpoint-{i % 7}"))
        return NotificationRequested.new(
            tenant_id=f"tenant-{i % 4}",
            producer="tests",
            notification_id=str(uuid6.uuid7()),
            channel=NotificationChannel.WEBHOOK,
            recipient=endpoint,
            endpoint_id=endpoint,
            template="invoice_paid",
        )
    return NotificationRequested.new(
        tenant_id=f"tenant-{i % 4}",
        producer="tests",
        notification_id=str(uuid6.uuid7()),
        channel=NotificationChannel.EMAIL,
        recipient=f"user{i}@example.test",
        template="welcome",
    )
