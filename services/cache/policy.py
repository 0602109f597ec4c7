"""Pure expiry policy: TTL jitter and XFetch probabilistic early recomputation.

Both take the random draw as an argument, so tests (and the cache, which injects its
random source) decide it. Times are integer milliseconds.
"""

from __future__ import annotations

import math

# log(0) is -inf: a draw of exactly 0.0 (possible with random.random) would force a
# recompute however far the expiry; clamp it to the smallest positive double instead.
_TINY = 5e-324


def jittered_ttl_ms(ttl: float, jitter: float, draw: float) -> int:
    """``ttl`` seconds spread uniformly over ``ttl·(1 ± jitter)``, in ms (at least 1).

    Spreading expiries keeps keys written together (a warm-up, a batch fill) from expiring
    together and sending one burst of misses to the database.

    Args:
        ttl: the nominal TTL in seconds (> 0).
        jitter: the fraction in [0, 1) by which the TTL may move either way.
        draw: a uniform random number in [0, 1).
    """
    if ttl <= 0:
        raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    factor = 1.0 + jitter * (2.0 * draw - 1.0)
    return max(1, round(ttl * 1000.0 * factor))


def should_recompute_early(
    *, now_ms: int, delta_ms: int, expiry_ms: int, beta: float, draw: float
) -> bool:
    """XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): recompute before expiry when
    ``now - delta·beta·ln(draw) >= expiry``.

    ``-ln(draw)`` is exponentially distributed, so the chance of an early recompute grows
    smoothly as the expiry approaches, and faster for values that are slow to compute
    (large ``delta``): across many readers roughly one recomputes before the value
    expires, so the key never goes cold. ``beta`` > 1 favours earlier recomputation;
    ``beta`` = 0 disables it (only an already-expired entry qualifies).
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    gap = -delta_ms * beta * math.log(max(draw, _TINY)) if beta and delta_ms > 0 else 0.0
    return now_ms + gap >= expiry_ms
