"""Synthetic but valid events for load tests, benchmarks, chaos scenarios and demos.

Tenants and keys follow a Zipf-like skew (a few hot tenants, a long tail), and everything
— including each event's UUIDv7 id — comes from one seeded random source, so a seed gives
the same stream every time.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from schemas import (
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    EntityChanged,
    Event,
    NotificationChannel,
    NotificationRequested,
)

Kind = Literal["audit", "analytics", "notification", "entity"]
KINDS: tuple[Kind, ...] = ("audit", "analytics", "notification", "entity")

_ACTIONS = ("project.create", "project.update", "member.invite", "invoice.pay", "login")
_PAGES = ("page_view", "click", "search", "signup", "checkout")
_ENTITIES = ("project", "order", "customer")


class SyntheticEvents:
    """An endless, reproducible stream of events.

    Args:
        seed: same seed, same stream.
        tenants: how many tenants there are.
        skew: Zipf exponent of tenant popularity (0 = uniform; ~1.1 is typical).
        mix: relative weights of the kinds, in ``KINDS`` order.
        start: ``occurred_at`` of the first event; each next one is ``spacing`` later.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        tenants: int = 50,
        skew: float = 1.1,
        mix: Sequence[float] = (4, 4, 1, 1),
        producer: str = "sidestream-load",
        start: datetime | None = None,
        spacing: timedelta = timedelta(milliseconds=1),
    ) -> None:
        if tenants < 1:
            raise ValueError("tenants must be at least 1")
        if len(mix) != len(KINDS) or min(mix) < 0 or sum(mix) <= 0:
            raise ValueError(f"mix needs {len(KINDS)} non-negative weights, not all zero")
        self._rng = random.Random(seed)
        self._tenants = [f"tenant-{i:04d}" for i in range(tenants)]
        self._tenant_weights = list(
            itertools.accumulate(1 / (rank**skew) for rank in range(1, tenants + 1))
        )
        self._kind_weights = list(itertools.accumulate(mix))
        self._producer = producer
        self._clock = start or datetime.now(UTC)
        self._spacing = spacing
        self._versions: dict[str, int] = {}

    def tenant(self) -> str:
        return self._rng.choices(self._tenants, cum_weights=self._tenant_weights)[0]

    def _uuid7(self, moment: datetime) -> str:
        millis = int(moment.timestamp() * 1000) & ((1 << 48) - 1)
        bits = (millis << 80) | (0x7 << 76) | (self._rng.getrandbits(12) << 64)
        bits |= (0b10 << 62) | self._rng.getrandbits(62)
        return str(uuid.UUID(int=bits))

    def _tick(self) -> datetime:
        moment, self._clock = self._clock, self._clock + self._spacing
        return moment

    def next(self, kind: Kind | None = None) -> Event:
        """One event of ``kind`` (or of a kind drawn from the mix)."""
        rng = self._rng
        kind = kind or rng.choices(KINDS, cum_weights=self._kind_weights)[0]
        moment = self._tick()
        envelope = {
            "event_id": self._uuid7(moment),
            "tenant_id": self.tenant(),
            "occurred_at": moment,
            "producer": self._producer,
        }
        event: Event
        if kind == "audit":
            event = AuditEvent(
                event_type=AuditEvent.SUBJECT,
                schema_version=AuditEvent.SCHEMA_VERSION,
                actor_id=f"user-{rng.randrange(1000)}",
                action=rng.choice(_ACTIONS),
                resource_type="project",
                resource_id=f"prj-{rng.randrange(10_000)}",
                outcome=AuditOutcome.SUCCESS if rng.random() < 0.95 else AuditOutcome.DENIED,
                ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                details={"request_id": f"req-{rng.getrandbits(32):08x}"},
                **envelope,  # type: ignore[arg-type]
            )
        elif kind == "analytics":
            event = AnalyticsEvent(
                event_type=AnalyticsEvent.SUBJECT,
                schema_version=AnalyticsEvent.SCHEMA_VERSION,
                name=rng.choice(_PAGES),
                user_id=f"user-{rng.randrange(1000)}",
                session_id=f"s-{rng.getrandbits(24):06x}",
                properties={"path": f"/p/{rng.randrange(100)}"},
                value=round(rng.random() * 100, 2),
                platform=rng.choice(("web", "ios", "android")),
                **envelope,  # type: ignore[arg-type]
            )
        elif kind == "notification":
            event = NotificationRequested(
                event_type=NotificationRequested.SUBJECT,
                schema_version=NotificationRequested.SCHEMA_VERSION,
                notification_id=self._uuid7(moment),
                channel=NotificationChannel.EMAIL,
                recipient=f"user{rng.randrange(1000)}@example.test",
                template="welcome",
                params={"name": f"User {rng.randrange(1000)}"},
                **envelope,  # type: ignore[arg-type]
            )
        else:
            entity_id = f"{rng.randrange(1000)}"
            key = f"{envelope['tenant_id']}:{entity_id}"
            self._versions[key] = version = self._versions.get(key, 0) + 1
            event = EntityChanged(
                event_type=EntityChanged.SUBJECT,
                schema_version=EntityChanged.SCHEMA_VERSION,
                entity_type=rng.choice(_ENTITIES),
                entity_id=entity_id,
                version=version,
                change_kind=ChangeKind.CREATED if version == 1 else ChangeKind.UPDATED,
                **envelope,  # type: ignore[arg-type]
            )
        return event

    def take(self, count: int, kind: Kind | None = None) -> Iterator[Event]:
        """``count`` events of ``kind`` (or of the mix)."""
        for _ in range(count):
            yield self.next(kind)
