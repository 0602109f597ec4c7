"""`AsyncEventPublisher`: the publisher for asyncio code (FastAPI handlers).

``await publish(...)`` calls the synchronous publisher directly: it validates, encodes and
queues in a few microseconds and never waits for the broker, so it does not block the
event loop (a thread hop would cost more than the call). ``await flush()`` and
``await close()`` do wait, so they run in a worker thread.

``await publish_confirmed(...)`` returns once Kafka acknowledged the event: the delivery
report (served by the publisher's thread) resolves an asyncio future through
``loop.call_soon_threadsafe``.

In a FastAPI app::

    @asynccontextmanager
    async def lifespan(app):
        app.state.events = AsyncEventPublisher(EventPublisher(settings=settings, producer="api"))
        yield
        await app.state.events.close()

    @app.post("/invoices/{id}")
    async def update(id: str, request: Request):
        try:
            await request.app.state.events.publish(event, traceparent=...)
        except Backpressure as exc:
            raise HTTPException(503, headers={"Retry-After": str(math.ceil(exc.retry_after))})
"""

from __future__ import annotations

import asyncio
import contextlib

from producers.delivery import DeliveryReport
from producers.errors import DeliveryError
from producers.publisher import EventPublisher, Headers
from schemas import Event

__all__ = ["AsyncEventPublisher"]


def _settle(future: asyncio.Future[DeliveryReport], report: DeliveryReport) -> None:
    if future.done():  # the waiter timed out or was cancelled
        return
    if report.error is None:
        future.set_result(report)
    else:
        future.set_exception(
            DeliveryError(topic=report.topic, event_id=report.event_id, error=report.error.str())
        )


class AsyncEventPublisher:
    """Awaitable front of an `EventPublisher` (which it owns: `close()` closes it)."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher

    @property
    def publisher(self) -> EventPublisher:
        """The synchronous publisher underneath (for threads and metrics)."""
        return self._publisher

    async def publish(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: bytes | str | None = None,
        traceparent: str | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Queue `event` for Kafka; same contract and errors as `EventPublisher.publish`."""
        self._publisher.publish(
            event, topic=topic, key=key, traceparent=traceparent, headers=headers
        )

    async def publish_confirmed(
        self,
        event: Event,
        *,
        topic: str | None = None,
        key: bytes | str | None = None,
        traceparent: str | None = None,
        headers: Headers | None = None,
        timeout: float = 30.0,
    ) -> DeliveryReport:
        """Publish `event` and wait until Kafka acknowledged it (at most `timeout` s).

        Raises what `publish` raises, then `DeliveryError` if the broker never acknowledged
        it, or `TimeoutError` after `timeout` (the message may still be delivered later).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[DeliveryReport] = loop.create_future()

        def delivered(report: DeliveryReport) -> None:
            # RuntimeError: the loop closed while the message was in flight; nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, report)

        self._publisher.publish(
            event,
            topic=topic,
            key=key,
            traceparent=traceparent,
            headers=headers,
            on_delivery=delivered,
        )
        return await asyncio.wait_for(future, timeout)

    async def flush(self, timeout: float = 10.0) -> int:
        """Wait (in a thread) until queued messages are reported; returns those left."""
        return await asyncio.to_thread(self._publisher.flush, timeout)

    async def close(self, timeout: float = 10.0) -> int:
        """Flush and close the publisher (in a thread); returns the undelivered count."""
        return await asyncio.to_thread(self._publisher.close, timeout)

    async def __aenter__(self) -> AsyncEventPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
