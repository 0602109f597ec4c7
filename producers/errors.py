"""The errors of the producers package: one small tree under `ProducerError`.

- `Backpressure`: the local producer queue is full; nothing was queued. A control-flow
  signal, not a failure: retry after `retry_after` seconds (an API answers 503 with
  ``Retry-After``).
- `PublisherClosedError`: `publish()` after `close()`.
- `PublishError`: librdkafka refused the message outright (e.g. larger than
  ``message.max.bytes``); retrying the same message will not help.
- `DeliveryError`: the broker never acknowledged a message (`publish_confirmed`).
- `OutboxError`: the outbox was misused (e.g. `add` outside a transaction).
- `TopicsError`: creating or deleting a topic failed for a reason other than a missing
  broker feature.
- `BrokersUnreachableError`: no broker answered a metadata request in time
  (`EventPublisher.check_brokers`); also a `ConnectionError`, so it counts as transient.

Invalid events raise `schemas.ValidationError` (naming the field), which is not wrapped:
it is the caller's bug, and nothing reached Kafka or the outbox.
"""

from __future__ import annotations

from collections.abc import Sequence

from runtime.errors import SidestreamError

__all__ = [
    "Backpressure",
    "BrokersUnreachableError",
    "DeliveryError",
    "OutboxError",
    "ProducerError",
    "PublishError",
    "PublisherClosedError",
    "TopicsError",
]


class ProducerError(SidestreamError):
    """Base class of every error raised by the producers package."""


class Backpressure(ProducerError):  # noqa: N818 - a signal (like Retry), not a failure
    """The local queue holds `queue_depth` messages, its bound: try again in `retry_after` s."""

    def __init__(self, *, topic: str, retry_after: float, queue_depth: int) -> None:
        super().__init__(
            f"producer queue full ({queue_depth} messages waiting) publishing to {topic}; "
            f"retry after {retry_after:.2f}s"
        )
        self.topic = topic
        self.retry_after = retry_after
        self.queue_depth = queue_depth


class PublisherClosedError(ProducerError):
    """The publisher was closed; it accepts no more events."""


class PublishError(ProducerError):
    """librdkafka rejected the message when it was produced (not a full queue)."""

    def __init__(self, message: str, *, topic: str, event_id: str | None) -> None:
        super().__init__(message)
        self.topic = topic
        self.event_id = event_id


class DeliveryError(ProducerError):
    """A message was not acknowledged by the broker; `error` is librdkafka's reason."""

    def __init__(self, *, topic: str, event_id: str | None, error: str) -> None:
        super().__init__(f"event {event_id} was not delivered to {topic}: {error}")
        self.topic = topic
        self.event_id = event_id
        self.error = error


class OutboxError(ProducerError):
    """The transactional outbox was used in a way that would lose its guarantee."""


class TopicsError(ProducerError):
    """Topics could not be created or deleted; `done` lists what was done before."""

    def __init__(self, message: str, *, done: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.done = list(done)


class BrokersUnreachableError(ProducerError, ConnectionError):
    """No broker answered within `timeout_s`; the librdkafka error is the ``__cause__``."""

    def __init__(self, *, bootstrap: str, timeout_s: float, error: str) -> None:
        super().__init__(f"no Kafka broker at {bootstrap} answered within {timeout_s:g}s: {error}")
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
