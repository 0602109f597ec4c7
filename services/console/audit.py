"""Every console action leaves an :class:`~schemas.AuditEvent` on the audit topic.

The event goes through the platform's own :class:`~producers.EventPublisher` (injected),
so the audit sink lands it in ``audit_events`` like any other: tenant ``_console``,
``actor_id`` the principal's name, ``action`` ``console.<what>``, the outcome, and the
parameters as ``details``. Publishing never blocks the page: a full publisher queue or a
broker outage is logged, and the action's own result is still shown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from producers import ProducerError
from schemas import AuditEvent, AuditOutcome, Event

__all__ = ["CONSOLE_TENANT", "AuditTrail", "Publisher"]

logger = logging.getLogger(__name__)

#: The tenant of the console's own audit events (operators act across tenants).
CONSOLE_TENANT = "_console"


class Publisher(Protocol):
    """What the trail needs of :class:`producers.EventPublisher`."""

    def publish(self, event: Event, *, topic: str | None = None) -> None: ...


class AuditTrail:
    """Publishes one audit event per console action.

    Args:
        publisher: the platform's event publisher (its owner flushes and closes it).
        topic: where to publish (default: the audit event's topic from topics.yaml).
        producer: the ``producer`` field of every event.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        topic: str | None = None,
        producer: str = "sidestream-console",
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._producer = producer

    def record(
        self,
        *,
        actor: str,
        action: str,
        resource_type: str,
        resource_id: str,
        succeeded: bool,
        ip: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> AuditEvent:
        """Publish the event of one action; returns it (published or not)."""
        event = AuditEvent.new(
            tenant_id=CONSOLE_TENANT,
            producer=self._producer,
            actor_id=actor,
            action=f"console.{action}",
            resource_type=resource_type,
            resource_id=resource_id,
            outcome=AuditOutcome.SUCCESS if succeeded else AuditOutcome.FAILURE,
            ip=ip,
            details={str(k): str(v) for k, v in (details or {}).items()},
        )
        try:
            self._publisher.publish(event, topic=self._topic)
        except ProducerError as exc:  # a full queue or a closed publisher: the action stands
            logger.warning(
                "audit event %s (%s by %s) not published: %s", event.event_id, action, actor, exc
            )
        return event
