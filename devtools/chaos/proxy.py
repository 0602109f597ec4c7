"""A fault-injecting TCP proxy: put it between a client and a server, then add latency and
cut connections at random, with a seed and within bounds.

Flow of one connection::

    client ──▶ 127.0.0.1:<proxy port> ──▶ upstream connect (bounded by connect_timeout_s)
                 │ two pumps, one per direction, each: read a chunk
                 │   → with probability drop_rate (while fewer than max_drops cuts so far):
                 │       reset both sockets (RST, not FIN: what a dead network looks like)
                 │   → sleep latency_s + uniform(0, jitter_s)
                 │   → forward the chunk
                 ▼
             both directions ended → close both sockets

The proxy runs its own event loop on a daemon thread, so synchronous code (scenarios,
tests) drives it with :meth:`FaultProxy.start`, :meth:`~FaultProxy.set_faults`,
:meth:`~FaultProxy.cut_all` and :meth:`~FaultProxy.stop`.

Randomness: each direction of each connection draws from its own ``random.Random`` seeded
with ``(seed, connection number, direction)``, so one connection's decisions do not depend
on how other connections interleave with it. Where TCP splits the stream into chunks still
depends on timing: a seed reproduces the faults in distribution, not byte for byte.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import struct
import threading
from dataclasses import dataclass, replace

__all__ = ["FaultProxy", "ProxyFaults", "ProxyStats"]

logger = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyFaults:
    """What the proxy does to the bytes it forwards; durations in seconds.

    The default is a transparent proxy.
    """

    latency_s: float = 0.0
    """Added before every forwarded chunk, in each direction."""
    jitter_s: float = 0.0
    """Plus a uniform draw in ``[0, jitter_s)``."""
    drop_rate: float = 0.0
    """Chance, per forwarded chunk, that the connection is cut instead."""
    max_drops: int = 100
    """Bound on cuts over the proxy's life (``cut_all`` included)."""

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency_s and jitter_s must be >= 0 seconds")
        if self.latency_s + self.jitter_s > 10:
            raise ValueError("latency_s + jitter_s above 10 s would stall every client")
        if not 0 <= self.drop_rate <= 1:
            raise ValueError(f"drop_rate must be in [0, 1], got {self.drop_rate}")
        if self.max_drops < 0:
            raise ValueError(f"max_drops must be >= 0, got {self.max_drops}")


@dataclass(frozen=True, slots=True)
class ProxyStats:
    """Counters of one proxy (a snapshot)."""

    connections: int = 0
    """Client connections accepted."""
    open: int = 0
    """Connections open now."""
    refused: int = 0
    """Connections closed because the upstream could not be reached."""
    drops: int = 0
    """Connections cut by the proxy (random drops and ``cut_all``)."""
    delayed_chunks: int = 0
    bytes_forwarded: int = 0


class _Connection:
    """One client connection and its upstream."""

    def __init__(self, number: int, client: asyncio.StreamWriter) -> None:
        self.number = number
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.cut = False

    def reset(self) -> None:
        """Close both sockets at once with an RST (SO_LINGER 0), as a failed link would."""
        self.cut = True
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    """Forwards ``listen_host:listen_port`` to ``target_host:target_port`` with faults.

    Args:
        target_port: where connections go; :attr:`target` may be set again later (each
            new connection reads it), e.g. once an upstream that must advertise the
            proxy's port has started.
        target_host: the upstream's host.
        faults: the initial faults (default none); change them with :meth:`set_faults`.
        seed: seeds every random decision.
        listen_port: 0 picks a free port (see :attr:`port` after :meth:`start`).
        connect_timeout_s: bound on connecting upstream; the client's connection is
            closed when it passes.
        name: for logs and the thread's name.
    """

    def __init__(
        self,
        *,
        target_port: int,
        target_host: str = "127.0.0.1",
        faults: ProxyFaults | None = None,
        seed: int = 0,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout_s: float = 5.0,
        name: str = "proxy",
    ) -> None:
        if connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be > 0")
        self.target = (target_host, target_port)
        self.name = name
        self._faults = faults or ProxyFaults()
        self._seed = seed
        self._listen = (listen_host, listen_port)
        self._connect_timeout_s = connect_timeout_s
        self._stats = ProxyStats()
        self._stats_lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    # --- lifecycle --------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> FaultProxy:
        """Bind and start forwarding; returns once the port listens.

        Raises:
            OSError: the listen port could not be bound.
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.name} already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._handle, self._listen[0], self._listen[1], reuse_address=True
            )
            self._port = int(self._server.sockets[0].getsockname()[1])

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(listen())
            except BaseException as exc:
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=serve, name=f"chaos-{self.name}", daemon=True)
        self._thread.start()
        try:
            ready.result(timeout_s)
        except concurrent.futures.TimeoutError:
            self.stop()
            raise TimeoutError(f"{self.name} did not start within {timeout_s:.0f}s") from None
        except BaseException:
            self._thread.join(timeout_s)
            self._thread = None
            raise
        logger.info(
            "%s: 127.0.0.1:%d → %s:%d", self.name, self.port, self.target[0], self.target[1]
        )
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop listening, reset every open connection, and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            # Reset first: the pumps then see the end of their streams and return on
            # their own; only what is still running after a moment is cancelled.
            for connection in list(self._connections):
                connection.reset()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=min(2.0, timeout_s / 2))
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

        with contextlib.suppress(RuntimeError, TimeoutError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout_s)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- control (any thread) -----------------------------------------------------------
    @property
    def port(self) -> int:
        """The listening port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._port

    @property
    def address(self) -> str:
        return f"{self._listen[0]}:{self.port}"

    @property
    def faults(self) -> ProxyFaults:
        return self._faults

    def set_faults(self, faults: ProxyFaults | None) -> None:
        """Change the faults of every chunk from now on; ``None`` = transparent again.

        ``max_drops`` counts over the proxy's life: cuts already made count against it.
        """
        self._faults = faults or replace(ProxyFaults(), max_drops=self._faults.max_drops)

    @property
    def stats(self) -> ProxyStats:
        with self._stats_lock:
            return self._stats

    def cut_all(self, timeout_s: float = 5.0) -> int:
        """Reset every open connection now (a network blip); returns how many.

        Counts as drops, but is not limited by ``max_drops``: the caller asked for it.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return 0

        async def cut() -> int:
            victims = [c for c in self._connections if not c.cut]
            for connection in victims:
                connection.reset()
            self._count(drops=len(victims))
            return len(victims)

        return asyncio.run_coroutine_threadsafe(cut(), loop).result(timeout_s)

    # --- forwarding ---------------------------------------------------------------------
    def _count(self, **increments: int) -> None:
        with self._stats_lock:
            values = {k: getattr(self._stats, k) + v for k, v in increments.items()}
            self._stats = replace(self._stats, **values)

    async def _handle(self, reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        number = self.stats.connections
        self._count(connections=1, open=1)
        connection = _Connection(number, client)
        self._connections.add(connection)
        try:
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self._connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                self._count(refused=1)
                logger.debug("%s: upstream %s:%d unreachable: %s", self.name, *self.target, exc)
                return
            connection.upstream = upstream
            await asyncio.gather(
                self._pump(reader, upstream, connection, "up"),
                self._pump(up_reader, client, connection, "down"),
            )
        except asyncio.CancelledError:
            # Only stop() cancels a handler. asyncio.start_server logs a cancelled
            # handler task as an error, so end it quietly: the proxy is going away.
            connection.reset()
        finally:
            self._connections.discard(connection)
            self._count(open=-1)
            for writer in (client, connection.upstream):
                if writer is not None and not writer.transport.is_closing():
                    writer.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        connection: _Connection,
        direction: str,
    ) -> None:
        rng = random.Random(f"{self._seed}:{connection.number}:{direction}")
        try:
            while not connection.cut:
                chunk = await source.read(_CHUNK)
                if not chunk:
                    if sink.can_write_eof() and not sink.transport.is_closing():
                        sink.write_eof()  # half-close: the other direction may go on
                    return
                faults = self._faults
                if faults.drop_rate and rng.random() < faults.drop_rate and self._take_drop():
                    logger.debug("%s: cutting connection %d", self.name, connection.number)
                    connection.reset()
                    return
                delay = faults.latency_s + (
                    rng.random() * faults.jitter_s if faults.jitter_s else 0
                )
                if delay > 0:
                    self._count(delayed_chunks=1)
                    await asyncio.sleep(delay)
                if connection.cut:
                    return
                sink.write(chunk)
                await sink.drain()
                self._count(bytes_forwarded=len(chunk))
        except (ConnectionError, OSError):
            # One side went away: so does the other (a proxy cannot half-fail a link).
            connection.reset()

    def _take_drop(self) -> bool:
        with self._stats_lock:
            if self._stats.drops >= self._faults.max_drops:
                return False
            self._stats = replace(self._stats, drops=self._stats.drops + 1)
            return True
