"""The GCRA rate limiter against the real Redis, and failing open without it."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from runtime import Settings, new_registry
from services.cache import cache_redis
from services.ratelimit import RateLimit, RateLimitDecision, RateLimiter


def test_rate_limit_values_are_checked() -> None:
    with pytest.raises(ValueError, match="limit"):
        RateLimit(limit=0, window_s=1)
    with pytest.raises(ValueError, match="window_s"):
        RateLimit(limit=1, window_s=0)
    rate = RateLimit(limit=3, window_s=1.5)
    assert rate.interval_us == 500_000
    assert rate.window_us == 1_500_000
    assert rate.policy == "3;w=2"


def test_headers_round_up_and_say_when_to_retry() -> None:
    allowed = RateLimitDecision(True, 10, 4, 2.2, 0.0, "10;w=60")
    assert allowed.headers() == {
        "RateLimit-Limit": "10",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": "3",
        "RateLimit-Policy": "10;w=60",
    }
    denied = RateLimitDecision(False, 10, 0, 59.5, 0.2, "10;w=60")
    assert denied.headers()["Retry-After"] == "1"
    assert RateLimitDecision(True, 10, 10, 0, 0, "10;w=60", degraded=True).headers() == {}


def test_a_burst_then_the_sustained_rate(stack_settings: Settings, key_prefix: str) -> None:
    async def body() -> None:
        client = cache_redis(stack_settings)
        registry = new_registry()
        limiter = RateLimiter(
            redis=client,
            prefix=key_prefix + "rl",
            # 4 at once, then one per second: the hits below may each take up to a second
            # on a busy machine before a token comes back (at 100 ms per token they could
            # not: a slow round trip refilled the bucket and the test failed by chance).
            limit=RateLimit(limit=4, window_s=4.0),
            registry=registry,
        )
        try:
            burst = [await limiter.hit("acme/c1") for _ in range(5)]
            assert [d.allowed for d in burst] == [True] * 4 + [False]
            assert [d.remaining for d in burst] == [3, 2, 1, 0, 0]
            assert 0.0 < burst[-1].retry_after_s <= 1.0
            assert 3.0 < burst[3].reset_s <= 4.0
            # Another subject has its own bucket.
            assert (await limiter.hit("acme/c2")).allowed
            await asyncio.sleep(burst[-1].retry_after_s + 0.02)
            assert (await limiter.hit("acme/c1")).allowed
            assert not (await limiter.hit("acme/c1")).allowed
            # The bucket's key expires once it would be full again.
            ttl_ms = await client.pttl(limiter.key("acme/c1"))
            assert 0 < ttl_ms <= 4000
            counted = registry.get_sample_value(
                "sidestream_ratelimit_decisions_total", {"limiter": "api", "outcome": "allowed"}
            )
            assert counted == 6
        finally:
            await client.aclose()

    asyncio.run(body())


def test_concurrent_hits_from_two_clients_admit_exactly_the_limit(
    stack_settings: Settings, key_prefix: str
) -> None:
    registry = new_registry()

    async def body() -> list[bool]:
        # Two Redis clients: like two API processes sharing one bucket. Pools big enough
        # for every hit at once, and patient connects: a client that cannot reach Redis
        # in time fails open, which is another test.
        clients = [
            cache_redis(
                stack_settings, max_connections=200, socket_connect_timeout=5, socket_timeout=5
            )
            for _ in range(2)
        ]
        limit = RateLimit(limit=50, window_s=600)
        limiters = [
            RateLimiter(redis=c, prefix=key_prefix + "rl", limit=limit, registry=registry)
            for c in clients
        ]
        try:
            decisions = await asyncio.gather(
                *(limiters[n % 2].hit("acme/shared") for n in range(200))
            )
            return [d.allowed for d in decisions]
        finally:
            for client in clients:
                await client.aclose()

    assert sum(asyncio.run(body())) == 50
    assert not registry.get_sample_value(
        "sidestream_ratelimit_decisions_total", {"limiter": "api", "outcome": "fail_open"}
    )


def test_fails_open_with_a_metric_when_redis_is_unreachable(nowhere_port: int) -> None:
    async def body() -> None:
        client = Redis(
            host="127.0.0.1",
            port=nowhere_port,
            socket_timeout=0.25,
            socket_connect_timeout=0.25,
            retry=Retry(NoBackoff(), 0),
        )
        registry = new_registry()
        limiter = RateLimiter(
            redis=client,
            prefix="down",
            limit=RateLimit(limit=1, window_s=60),
            registry=registry,
            outage_backoff_ms=60_000,
        )
        try:
            decisions = [await limiter.hit("acme/c1") for _ in range(3)]
        finally:
            await client.aclose()
        assert all(d.allowed and d.degraded for d in decisions)
        sample = registry.get_sample_value
        assert (
            sample(
                "sidestream_ratelimit_decisions_total", {"limiter": "api", "outcome": "fail_open"}
            )
            == 3
        )
        # One failed call opened the outage window; the others did not try Redis.
        assert sample("sidestream_ratelimit_redis_errors_total", {"limiter": "api"}) == 1

    asyncio.run(body())
