"""The chaos suite (``sidestream chaos``, ``make chaos``): scripted fault scenarios, each
on a private stack, each with a seed and a time budget, each judged on loss, duplicates
and stale cache entries.

Scenarios (``devtools.chaos.scenarios``): ``worker-kills``, ``postgres-crash``,
``broker-freeze`` (and ``broker-freeze-api``), ``redis-restart``, ``proxy-faults``,
``sigterm-drain``. Building blocks: :class:`PrivateStack` (servers to kill and freeze),
:class:`FaultProxy` (latency and cut connections), :class:`ScenarioRun` (one run's
lifecycle and budget), :class:`ScenarioReport`.
"""

from devtools.chaos.errors import ChaosError, StalledError
from devtools.chaos.proxy import FaultProxy, ProxyFaults, ProxyStats
from devtools.chaos.report import ScenarioReport, report_table, write_reports
from devtools.chaos.runner import run_scenarios
from devtools.chaos.scenario import ChaosContext, ScenarioRun, Size
from devtools.chaos.scenarios import SCENARIOS
from devtools.chaos.stack import PrivateStack

__all__ = [
    "SCENARIOS",
    "ChaosContext",
    "ChaosError",
    "FaultProxy",
    "PrivateStack",
    "ProxyFaults",
    "ProxyStats",
    "ScenarioReport",
    "ScenarioRun",
    "Size",
    "StalledError",
    "report_table",
    "run_scenarios",
    "write_reports",
]
