"""The Postgres sinks, by worker name."""

from consumers.sinks.analytics import AnalyticsSink
from consumers.sinks.audit import AuditSink
from consumers.sinks.notifications import NOTIFY_CHANNEL, NotificationsSink

__all__ = ["NOTIFY_CHANNEL", "AnalyticsSink", "AuditSink", "NotificationsSink"]
