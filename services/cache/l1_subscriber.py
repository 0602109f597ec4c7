"""The read side of invalidation: one process's L1 kept honest over Redis pub/sub.

:class:`L1Subscriber` listens on ``<namespace>:invalidations`` (published atomically with
each tombstone, :mod:`services.cache.tombstones`) and tells its cache, through the small
:class:`LocalCache` contract, to evict a key, to flush, or to stop and resume serving its
L1 when the subscription is lost and regained. It never reaches into the cache's
internals, and the cache does not import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.outages import LineLimiter
from services.cache.keys import Keys
from services.cache.local import L1
from services.cache.tombstones import REDIS_DOWN, decode_message


class LocalCache(Protocol):
    """What an :class:`L1Subscriber` needs of its cache (:class:`VersionedCache` is one)."""

    @property
    def l1(self) -> L1 | None: ...

    @property
    def keys(self) -> Keys: ...

    @property
    def redis(self) -> Redis: ...

    def evict_local(self, key: str, version: int) -> None:
        """Drop ``key`` from the L1 if it holds a version older than ``version``."""

    def flush_local(self, reason: str) -> None:
        """Drop every L1 entry (``reason`` labels the eviction metric)."""

    def suspend_local(self, reason: str) -> None:
        """Stop serving and filling the L1 at once, and flush it."""

    def resume_local(self) -> None:
        """Flush what may have been missed and serve the L1 again."""


logger = logging.getLogger(__name__)


class L1Subscriber:
    """Keeps one process's L1 honest: evicts keys invalidated by any process.

    Listens on ``<namespace>:invalidations``. The L1 is used only while the subscription
    is established: from :meth:`start` until the first subscription, and from the moment
    a connection is found broken until the next one, the cache neither reads nor fills
    its L1 (reads go to Redis or the loader), and every (re)subscription flushes it,
    because invalidations published while the connection was down are lost. A closed
    connection (Redis stopped or restarted) is noticed at once; a silent one is probed
    with ``PING`` every ``ping_interval`` seconds and dropped when the ``PONG`` does not
    come back within another ``ping_interval``. Reconnects back off
    exponentially (with jitter) up to ``max_backoff`` seconds, for as long as it runs.

    Use ``async with L1Subscriber(cache):`` or :meth:`start` / :meth:`stop`, one per
    process (per cache with an L1).

    Args:
        cache: the cache whose L1 to evict.
        redis: the client for the subscription (default: the cache's); the subscription
            holds one of its connections for as long as it runs.
        ping_interval: seconds of silence before probing the connection.
        max_backoff: the cap, in seconds, on the wait between reconnection attempts.
    """

    def __init__(
        self,
        cache: LocalCache,
        *,
        redis: Redis | None = None,
        ping_interval: float = 5.0,
        max_backoff: float = 2.0,
    ) -> None:
        if cache.l1 is None:
            raise ValueError("the cache has no L1: there is nothing to subscribe for")
        if ping_interval <= 0 or max_backoff <= 0:
            raise ValueError("ping_interval and max_backoff must be > 0 seconds")
        self._cache = cache
        self._redis = redis if redis is not None else cache.redis
        self._channel = cache.keys.channel
        self._ping_interval = ping_interval
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        # A Redis outage retries every max_backoff seconds: one warning a minute.
        self._outage_lines = LineLimiter(interval_s=60.0, clock=time.monotonic)
        self._lost_at: float | None = None
        #: How many times the subscription was (re)established.
        self.subscriptions = 0

    @property
    def subscribed(self) -> bool:
        """Whether the subscription is currently established."""
        return self._subscribed.is_set()

    async def start(self) -> None:
        """Start listening in a background task (returns at once; see :meth:`wait_subscribed`)."""
        if self._task is not None:
            raise RuntimeError("L1Subscriber already started")
        self._cache.suspend_local("not_subscribed")
        self._task = asyncio.create_task(self._run(), name=f"l1-subscriber:{self._channel}")

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the subscription; ``True`` if established."""
        try:
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop listening and release the connection."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._subscribed.clear()
        self._cache.suspend_local("not_subscribed")

    async def __aenter__(self) -> L1Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        failures = 0
        while True:
            established = self.subscriptions
            pubsub = self._redis.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(self._channel)
                if pubsub.connection is not None:
                    # redis-py would reconnect (and resubscribe) a broken connection on its
                    # own, hiding the gap in which messages were lost: we want to know.
                    pubsub.connection.retry = Retry(NoBackoff(), 0)
                await self._listen(pubsub)
            except REDIS_DOWN as exc:
                self._subscribed.clear()
                self._cache.suspend_local("subscription_lost")
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                # Back off from the last success, not from the first failure ever.
                failures = 1 if self.subscriptions > established else failures + 1
                delay = min(self._max_backoff, 0.05 * 2 ** min(failures, 8))
                delay *= random.uniform(0.5, 1.0)
                reason = " ".join(str(exc).split())
                held = self._outage_lines.admit(("lost", reason))
                if held is not None:
                    logger.warning(
                        "cache %s: invalidation subscription lost (%s); L1 off, reads go to "
                        "Redis or the loader; retrying%s",
                        self._cache.keys.namespace,
                        reason,
                        held,
                    )
            finally:
                # A broken connection may fail to close cleanly; it is discarded anyway.
                with contextlib.suppress(*REDIS_DOWN):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py 8.1
            await asyncio.sleep(delay)

    async def _listen(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        poll = min(1.0, self._ping_interval / 2)
        while True:
            message = await pubsub.get_message(timeout=poll)
            now = loop.time()
            if message is None:
                if last_ping > last_heard and now - last_ping >= self._ping_interval:
                    raise RedisTimeoutError(f"no PONG within {self._ping_interval:.1f}s")
                if now - last_heard >= self._ping_interval and last_ping <= last_heard:
                    await pubsub.ping()
                    last_ping = now
                continue
            last_heard = now
            kind = message["type"]
            if kind == "subscribe":
                # Also seen after redis-py reconnects and resubscribes on its own.
                self.subscriptions += 1
                self._cache.resume_local()
                self._subscribed.set()
                if self._lost_at is not None:
                    logger.info(
                        "cache %s: resubscribed after %.1fs; L1 flushed and back on",
                        self._cache.keys.namespace,
                        time.monotonic() - self._lost_at,
                    )
                    self._lost_at = None
            elif kind == "message":
                self._on_message(message["data"])

    def _on_message(self, data: bytes) -> None:
        try:
            key, version = decode_message(data)
        except ValueError:
            # Someone else publishes on our channel: we cannot tell what changed, so
            # forget everything rather than risk serving a stale entry.
            logger.warning(
                "cache %s: unreadable message on %s; flushing the L1",
                self._cache.keys.namespace,
                self._channel,
            )
            self._cache.flush_local("unreadable_message")
            return
        self._cache.evict_local(key, version)
