"""A per-subject rate limiter on Redis: GCRA (a token bucket kept as one timestamp), in
one atomic Lua step, failing open when Redis is unreachable.

A :class:`RateLimit` of ``limit`` requests per ``window_s`` seconds admits a burst of
``limit`` and then one request every ``window_s / limit`` seconds — a token bucket of
``limit`` tokens refilled continuously. GCRA (the generic cell rate algorithm, as in
``redis-cell`` and ``throttled``) stores a single value per subject, the *theoretical
arrival time* (TAT) at which the bucket would be full again::

    now         = Redis server time (one clock for every API process)
    tat         = max(stored TAT, now)
    new_tat     = tat + interval * cost            interval = window / limit
    allowed     iff new_tat - now <= window        (the bucket has room)
    remaining   = floor((window - (new_tat - now)) / interval)
    reset       = new_tat - now                    (until the bucket is full again)
    retry_after = new_tat - window - now           (when denied)

The read-compare-write is one script, so concurrent requests from any number of
processes are admitted exactly up to the limit. Memory is one small key per active
subject, expiring when its bucket is full again.

When Redis is unreachable the limiter *fails open*: requests are allowed (without
``RateLimit-*`` headers), ``sidestream_ratelimit_decisions_total{outcome="fail_open"}``
counts them, and Redis is skipped for ``outage_backoff_ms`` after each failure so an
outage costs one timeout per window, not one per request. Refusing every request because
the limiter's store is down would turn a cache outage into an API outage.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.observability import PerRegistry

__all__ = ["RateLimit", "RateLimitDecision", "RateLimitMetrics", "RateLimiter"]

logger = logging.getLogger(__name__)

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS[1] the subject's TAT (µs since the epoch, server clock); ARGV[1] interval µs;
# ARGV[2] window µs (= burst tolerance); ARGV[3] cost. Returns {allowed, remaining,
# reset µs, retry_after µs}. Microseconds since 1970 are ~1.8e15, exact in Lua's doubles
# (< 2^53), and written back with %.0f so no exponent notation reaches Redis.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then
  tat = now
end
local new_tat = tat + interval * cost
if new_tat - now > window then
  return {0, 0, tat - now, new_tat - window - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
  math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor((window - (new_tat - now)) / interval), new_tat - now, 0}
"""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``limit`` requests per ``window_s`` seconds, with bursts of up to ``limit``."""

    limit: int
    window_s: float

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"limit must be an int >= 1, got {self.limit!r}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {self.window_s}")

    @property
    def interval_us(self) -> int:
        """Microseconds between two requests at the sustained rate (at least 1)."""
        return max(1, math.ceil(self.window_s * 1_000_000 / self.limit))

    @property
    def window_us(self) -> int:
        return self.interval_us * self.limit

    @property
    def policy(self) -> str:
        """The ``RateLimit-Policy`` header value, e.g. ``100;w=60``."""
        return f"{self.limit};w={math.ceil(self.window_s)}"


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one :meth:`RateLimiter.hit`, with what the headers need.

    ``degraded`` means Redis was unreachable and the request was let through unmetered
    (``remaining``/``reset_s`` are then meaningless and no headers should be sent).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float
    policy: str
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """``RateLimit-Limit``/``-Remaining``/``-Reset``/``-Policy``, plus ``Retry-After``
        when denied; delta-seconds rounded up (IETF draft-ietf-httpapi-ratelimit-headers).
        Empty when the decision was degraded."""
        if self.degraded:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
            "RateLimit-Policy": self.policy,
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers


class RateLimitMetrics(PerRegistry):
    """The limiter's counters, one set per registry (:meth:`for_registry`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "sidestream_ratelimit_decisions",
            "Rate-limit decisions by outcome: allowed, limited, or fail_open (Redis "
            "unreachable: allowed without metering).",
            ["limiter", "outcome"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "sidestream_ratelimit_redis_errors",
            "Redis calls of the limiter that failed (each opens an outage window).",
            ["limiter"],
            registry=registry,
        )


class RateLimiter:
    """Admits requests per subject (e.g. ``apikey:<id>/write``) under a :class:`RateLimit`
    (the limiter's own, or one given per call).

    Args:
        redis: an async client (e.g. :func:`services.cache.cache_redis`, whose short
            timeouts suit a limiter on the request path). Not closed by us.
        prefix: namespace of the limiter's keys: ``<prefix>:rl:<subject>``.
        limit: the rate.
        name: the ``limiter`` label of the metrics.
        registry: where the metrics go.
        outage_backoff_ms: after a Redis failure, fail open without trying Redis for
            this long.
    """

    def __init__(
        self,
        *,
        redis: Redis,
        prefix: str,
        limit: RateLimit,
        name: str = "api",
        registry: CollectorRegistry = REGISTRY,
        outage_backoff_ms: int = 500,
    ) -> None:
        if not prefix or any(ch.isspace() for ch in prefix):
            raise ValueError(f"prefix must be non-empty without whitespace, got {prefix!r}")
        if outage_backoff_ms < 0:
            raise ValueError(f"outage_backoff_ms must be >= 0, got {outage_backoff_ms}")
        self.limit = limit
        self._prefix = f"{prefix}:rl:"
        self._script = redis.register_script(_GCRA)
        self._outage_backoff = outage_backoff_ms / 1000
        self._suspended_until = 0.0
        metrics = RateLimitMetrics.for_registry(registry)
        self._allowed = metrics.decisions.labels(name, "allowed")
        self._limited = metrics.decisions.labels(name, "limited")
        self._fail_open = metrics.decisions.labels(name, "fail_open")
        self._errors = metrics.redis_errors.labels(name)
        self._name = name

    def key(self, subject: str) -> str:
        """The Redis key of ``subject``'s bucket."""
        if not subject:
            raise ValueError("subject must be non-empty")
        return self._prefix + subject

    async def hit(
        self, subject: str, cost: int = 1, *, limit: RateLimit | None = None
    ) -> RateLimitDecision:
        """Take ``cost`` tokens from ``subject``'s bucket if it holds them.

        ``limit`` overrides the limiter's own rate for this subject (e.g. a limit per
        scope); use one rate per subject, as the bucket does not record which applied.

        Never raises for Redis failures: the decision is then ``allowed`` and
        ``degraded`` (fail open).
        """
        rate = limit or self.limit
        if not 1 <= cost <= rate.limit:
            raise ValueError(f"cost must be in [1, {rate.limit}], got {cost}")
        key = self.key(subject)
        if time.monotonic() < self._suspended_until:
            return self._open(rate)
        try:
            reply: Any = await self._script(
                keys=[key], args=[rate.interval_us, rate.window_us, cost]
            )
        except _REDIS_DOWN as exc:
            self._errors.inc()
            logger.warning(
                "rate limiter %s: Redis unreachable (%s); failing open for %.0f ms",
                self._name,
                exc,
                self._outage_backoff * 1000,
            )
            self._suspended_until = time.monotonic() + self._outage_backoff
            return self._open(rate)
        allowed, remaining, reset_us, retry_us = (int(value) for value in reply)
        decision = RateLimitDecision(
            allowed=bool(allowed),
            limit=rate.limit,
            remaining=max(0, remaining),
            reset_s=max(0, reset_us) / 1_000_000,
            retry_after_s=max(0, retry_us) / 1_000_000,
            policy=rate.policy,
        )
        (self._allowed if decision.allowed else self._limited).inc()
        return decision

    def _open(self, rate: RateLimit) -> RateLimitDecision:
        self._fail_open.inc()
        return RateLimitDecision(
            allowed=True,
            limit=rate.limit,
            remaining=rate.limit,
            reset_s=0.0,
            retry_after_s=0.0,
            policy=rate.policy,
            degraded=True,
        )
