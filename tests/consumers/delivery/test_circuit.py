"""Circuit breakers and per-host concurrency caps, with an injected clock."""

from __future__ import annotations

import asyncio

import pytest

from consumers.delivery import CircuitBreakers, CircuitState, HostLimiter
from tests.support.clocks import FakeClock


def test_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreakers(failure_threshold=3, cooldown_s=10, clock=clock).get("h:1")
    for _ in range(2):
        assert breaker.acquire()
        breaker.record_failure()
    assert breaker.state() is CircuitState.CLOSED
    breaker.record_success()  # consecutive: a success resets the count
    for _ in range(3):
        breaker.record_failure()
    assert breaker.state() is CircuitState.OPEN
    assert breaker.blocked()
    assert not breaker.acquire()
    assert breaker.remaining_s() == 10

    clock.now += 10
    assert breaker.state() is CircuitState.HALF_OPEN
    assert breaker.acquire()  # the probe
    assert not breaker.acquire()  # only one
    assert breaker.blocked()
    breaker.record_failure()  # the probe failed: another cool-down
    assert breaker.state() is CircuitState.OPEN
    assert breaker.remaining_s() == 10

    clock.now += 10
    assert breaker.acquire()
    breaker.record_success()
    assert breaker.state() is CircuitState.CLOSED
    assert breaker.acquire()
    assert breaker.acquire()


def test_a_neutral_probe_frees_the_probe_slot() -> None:
    clock = FakeClock()
    breaker = CircuitBreakers(failure_threshold=1, cooldown_s=5, clock=clock).get("h")
    breaker.record_failure()
    clock.now += 5
    assert breaker.acquire()
    breaker.record_neutral()  # e.g. a 429, or a cancelled send
    assert breaker.acquire()


def test_breakers_are_per_destination_and_healthy_ones_are_forgotten() -> None:
    breakers = CircuitBreakers(failure_threshold=1, cooldown_s=5, clock=FakeClock())
    breakers.get("dead").record_failure()
    breakers.get("fine").record_success()
    assert breakers.get("fine").acquire()
    assert not breakers.get("dead").acquire()
    assert breakers.open_count() == 1
    breakers.forget_healthy()
    assert breakers.open_count() == 1
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreakers(failure_threshold=0, cooldown_s=1)


def test_host_limiter_caps_each_destination() -> None:
    async def scenario() -> tuple[int, list[str], list[str]]:
        limiter = HostLimiter(2)
        active = 0
        peak = 0
        release = asyncio.Event()

        async def hold(destination: str) -> None:
            nonlocal active, peak
            async with limiter.slot(destination):
                if destination == "a":
                    active += 1
                    peak = max(peak, active)
                await release.wait()
                if destination == "a":
                    active -= 1

        tasks = [asyncio.create_task(hold("a")) for _ in range(5)]
        tasks.append(asyncio.create_task(hold("b")))
        await asyncio.sleep(0.05)
        saturated = limiter.saturated()
        release.set()
        await asyncio.gather(*tasks)
        return peak, saturated, limiter.saturated()

    peak, saturated, after = asyncio.run(scenario())
    assert peak == 2
    assert saturated == ["a"]
    assert after == []
