"""The fault scenarios, by name: each ``run(ctx) -> ScenarioReport`` on a private stack."""

from __future__ import annotations

from collections.abc import Callable

from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext
from devtools.chaos.scenarios import (
    broker_freeze,
    broker_freeze_api,
    postgres_crash,
    proxy_faults,
    redis_restart,
    sigterm_drain,
    worker_kills,
)

__all__ = ["SCENARIOS", "Scenario", "describe"]

Scenario = Callable[[ChaosContext], ScenarioReport]

#: Every scenario, in the order they run.
SCENARIOS: dict[str, Scenario] = {
    worker_kills.NAME: worker_kills.run,
    postgres_crash.NAME: postgres_crash.run,
    broker_freeze.NAME: broker_freeze.run,
    broker_freeze_api.NAME: broker_freeze_api.run,
    redis_restart.NAME: redis_restart.run,
    proxy_faults.NAME: proxy_faults.run,
    sigterm_drain.NAME: sigterm_drain.run,
}

_MODULES = (
    worker_kills,
    postgres_crash,
    broker_freeze,
    broker_freeze_api,
    redis_restart,
    proxy_faults,
    sigterm_drain,
)


def describe(name: str) -> str:
    """What scenario ``name`` does: the first paragraph of its module docstring."""
    for module in _MODULES:
        if name == module.NAME:
            paragraph = (module.__doc__ or "").strip().split("\n\n")[0]
            text = " ".join(paragraph.split())
            return text.split(": ", 1)[1] if text.startswith("Scenario ") else text
    raise KeyError(name)
