"""Synthetic but valid events for load tests, benchmarks, chaos scenarios and demos.

Tenants and keys follow a Zipf-like skew (a few hot tenants, a long tail), and everything
— including each event's UUIDv7 id — comes from one seeded random source, so a seed gives
the same stream every time.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from producers.errors import Backpressure
from producers.publisher import EventPublisher
from runtime import Settings, new_registry
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


@dataclass
class LoadResult:
    """What :func:`publish_load` published, by kind, and how it went."""

    published: Counter[str]
    backpressure_waits: int
    seconds: float
    undelivered: int

    @property
    def rate(self) -> float:
        return sum(self.published.values()) / max(self.seconds, 1e-9)


def publish_load(
    config: Settings,
    *,
    rate: float,
    count: int | None,
    duration: float | None,
    kinds: tuple[Kind, ...] = KINDS,
    tenants: int = 50,
    skew: float = 1.1,
    seed: int = 0,
    topic_override: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    connect_timeout_s: float | None = 5.0,
) -> LoadResult:
    """Publish ``count`` events (or for ``duration`` seconds) at ``rate`` events/s.

    Pacing is absolute (event *i* is due at ``start + i/rate``), so a stall is caught up
    rather than lowering the average. ``Backpressure`` from the publisher is honoured
    by waiting its ``retry_after`` and retrying the same event. ``on_progress(done,
    total)`` is called every 200 events and at the end.

    Before the first event, the brokers must answer within ``connect_timeout_s`` (None:
    do not wait; events queue until ``message.timeout.ms``): with Kafka away the load
    fails once, promptly, instead of publishing into a queue that can only fail.

    Raises:
        ValueError: ``rate`` is not positive, or neither ``count`` nor ``duration`` given.
        BrokersUnreachableError: no broker answered within ``connect_timeout_s``.
    """
    if rate <= 0:
        raise ValueError("the rate must be positive")
    if count is None and duration is None:
        raise ValueError("give a count or a duration")
    total = count if count is not None else int(rate * (duration or 0))
    mix = [1.0 if kind in kinds else 0.0 for kind in KINDS]
    generator = SyntheticEvents(seed=seed, tenants=tenants, skew=skew, mix=mix)
    publisher = EventPublisher(settings=config, producer="sidestream-load", registry=new_registry())
    published: Counter[str] = Counter()
    waits = 0
    try:
        if connect_timeout_s is not None:
            publisher.check_brokers(connect_timeout_s)
        start = time.monotonic()
        for i in range(total):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            event = generator.next()
            topic = (topic_override or {}).get(event.KIND)
            while True:
                try:
                    publisher.publish(event, topic=topic)
                    break
                except Backpressure as exc:
                    waits += 1
                    time.sleep(exc.retry_after)
            published[event.KIND] += 1
            if on_progress is not None and i % 200 == 0:
                on_progress(i, total)
        undelivered = publisher.flush(30)
    finally:
        publisher.close(10)
    if on_progress is not None:
        on_progress(total, total)
    return LoadResult(published, waits, time.monotonic() - start, undelivered)
