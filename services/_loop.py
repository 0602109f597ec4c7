"""An asyncio event loop on a thread of its own, for synchronous code that drives
asyncio clients (the invalidation sink runs in the synchronous batch runtime, while the
cache speaks ``redis.asyncio``).

Every object bound to the loop (a ``redis.asyncio`` client and its connections, the
cache's locks) must be created on it: build them with :meth:`EventLoopThread.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class EventLoopThread:
    """A daemon thread running one event loop until :meth:`close`."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop; the caller waits on the returned future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        Raises:
            TimeoutError: the coroutine did not finish in time (it is cancelled).
            Exception: whatever the coroutine raised.
        """
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError
            future.cancel()
            raise TimeoutError(f"coroutine did not finish within {timeout:.1f}s") from None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the loop (pending callbacks are dropped), join the thread, close the loop."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
