"""Sidestream producers: get events onto Kafka.

- `EventPublisher` / `AsyncEventPublisher`: validate, encode and queue an event without
  blocking the caller (fire-and-forget, delivery reported; `Backpressure` when the local
  queue is full).
- `Outbox` (`AsyncOutbox` for async connections) + `OutboxRelay`: the transactional outbox.
  `Outbox.add` writes the encoded event in the caller's Postgres transaction; the relay
  publishes committed rows in order per key and marks them sent (at-least-once; consumers
  dedupe on ``event_id``).
- `plan_topics` / `apply_topics`: topics as code, from ``schemas/topics.yaml``.
"""

from producers.async_publisher import AsyncEventPublisher
from producers.delivery import DeliveryReport
from producers.errors import (
    Backpressure,
    BrokersUnreachableError,
    DeliveryError,
    OutboxError,
    ProducerError,
    PublisherClosedError,
    PublishError,
    TopicsError,
)
from producers.outbox import OUTBOX_MIGRATIONS, AsyncOutbox, Outbox, OutboxEntry
from producers.publisher import DeliveryCallback, EventPublisher
from producers.relay import OutboxRelay, run_relay
from producers.relay_config import RelayConfig
from producers.topics import TopicPlan, apply_topics, plan_topics

__all__ = [
    "OUTBOX_MIGRATIONS",
    "AsyncEventPublisher",
    "AsyncOutbox",
    "Backpressure",
    "BrokersUnreachableError",
    "DeliveryCallback",
    "DeliveryError",
    "DeliveryReport",
    "EventPublisher",
    "Outbox",
    "OutboxEntry",
    "OutboxError",
    "OutboxRelay",
    "ProducerError",
    "PublishError",
    "PublisherClosedError",
    "RelayConfig",
    "TopicPlan",
    "TopicsError",
    "apply_topics",
    "plan_topics",
    "run_relay",
]
