"""Child processes the bench sections drive: ``python -m devtools.bench.peers KIND ...``.

``l1 NAMESPACE``
    A process with its own L1 on the cache ``NAMESPACE`` and an :class:`L1Subscriber`.
    Prints ``READY`` once subscribed. Per stdin line ``LOAD <key> <version>`` it reads
    ``key`` through ``get_or_load`` (its loader answers ``version``) until its L1 holds
    it and prints ``HELD <version>``. Whenever an invalidation evicts an entry from its
    L1 it prints ``EVICTED <version> <time.monotonic()>``: CLOCK_MONOTONIC is one clock
    for every process of a machine, so the writer can subtract its own readings.
``invalidation NAMESPACE --group G --topic T --schema S``
    The invalidation consumer (``run_invalidation_worker``, as ``sidestream worker run
    invalidation`` runs it, with its defaults) on the cache ``NAMESPACE``, which that
    command does not let a caller choose; stops (draining) on SIGTERM.
``api PORT SCHEMA NAMESPACE [--no-l1]``
    The reference API (``services.api.serve``) on 127.0.0.1:PORT (0: any free port,
    reported in the ready file of ``SIDESTREAM_READY_FILE``), with what a load test
    must not measure switched off: the per-client rate limit (one load generator is one
    client and would mostly get 429), view events (one Kafka message per read, to the
    shared ``analytics`` topic) and the access log. ``sidestream api`` has no options
    for these.

Connection settings come from the ``SIDESTREAM_*`` environment, read once here.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
import threading
import time

from runtime import Settings, configure_logging, load_settings, new_registry
from runtime.ports import announce_ready
from services.api import ApiConfig, serve
from services.cache import L1, L1Subscriber, Versioned, VersionedCache, cache_redis
from services.invalidation_consumer import run_invalidation_worker

__all__ = ["main"]

#: Bound on how long one LOAD may take (Redis lock waits included).
_LOAD_TIMEOUT_S = 10.0


class _TimedL1(L1):
    """An L1 that reports each eviction by an invalidation, with the moment it happened."""

    def invalidate(self, name: str, version: int) -> bool:
        evicted = super().invalidate(name, version)
        if evicted:
            print(f"EVICTED {version} {time.monotonic():.6f}", flush=True)
        return evicted


async def _l1_peer(config: Settings, namespace: str) -> None:
    # Patient timeouts: on a busy machine a 250 ms stall must not drop the subscription.
    client = cache_redis(config, socket_timeout=5, socket_connect_timeout=5)
    cache = VersionedCache(
        redis=client, namespace=namespace, registry=new_registry(), l1=_TimedL1(ttl=60)
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with L1Subscriber(cache) as subscriber:
            if not await subscriber.wait_subscribed(10):
                raise SystemExit("l1 peer: not subscribed within 10 s")
            print("READY", flush=True)
            while line := (await reader.readline()).decode().strip():
                _, key, version_text = line.split(" ")
                version = int(version_text)

                async def load(version: int = version) -> Versioned:
                    return Versioned("bench", version)

                async with asyncio.timeout(_LOAD_TIMEOUT_S):
                    held = await cache.get_or_load(key, load, 60)
                    # A flight that started before the last eviction may still answer an
                    # older version; the next read starts a new one.
                    while held is None or held.version < version:
                        held = await cache.get_or_load(key, load, 60)
                print(f"HELD {held.version}", flush=True)
    finally:
        await cache.aclose()
        await client.aclose()


def _invalidation_peer(config: Settings, args: argparse.Namespace) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    status = run_invalidation_worker(
        config,
        stop=stop,
        group_id=args.group,
        topics=[args.topic],
        schema=args.schema,
        namespace=args.namespace,
    )
    return int(status)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench.peers")
    kinds = parser.add_subparsers(dest="kind", required=True)
    l1 = kinds.add_parser("l1", help="an L1 that reports its evictions")
    l1.add_argument("namespace")
    invalidation = kinds.add_parser("invalidation", help="the invalidation consumer")
    invalidation.add_argument("namespace")
    invalidation.add_argument("--group", required=True)
    invalidation.add_argument("--topic", required=True)
    invalidation.add_argument("--schema", required=True)
    api = kinds.add_parser("api", help="the reference API, set up for load tests")
    api.add_argument("port", type=int)
    api.add_argument("schema")
    api.add_argument("namespace")
    api.add_argument("--no-l1", action="store_true", help="read through Redis only")
    args = parser.parse_args(argv)
    config = load_settings()
    configure_logging(config.log_level, config.log_format)
    # The bench starts peers on port 0: they report the port they bound in this file.
    announce_ready(config.ready_file)
    if args.kind == "l1":
        asyncio.run(_l1_peer(config, args.namespace))
    elif args.kind == "invalidation":
        sys.exit(_invalidation_peer(config, args))
    else:
        api_config = ApiConfig(
            schema=args.schema,
            cache_namespace=args.namespace,
            rate_limit=None,
            view_events=False,
            access_log=False,
        )
        if args.no_l1:
            api_config = dataclasses.replace(api_config, l1_ttl_s=None)
        serve(config, "127.0.0.1", args.port, config=api_config)


if __name__ == "__main__":
    main(sys.argv[1:])
