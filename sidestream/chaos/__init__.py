"""The chaos suite (``sidestream chaos``, ``make chaos``): scripted fault scenarios, each
on a private stack, each with a seed and a time budget, each judged on loss, duplicates
and stale cache entries.

Scenarios (``sidestream.chaos.scenarios``): ``worker-kills``, ``postgres-crash``,
``broker-freeze`` (and ``broker-freeze-api``), ``redis-restart``, ``proxy-faults``,
``sigterm-drain``. Building blocks: :class:`PrivateStack` (servers to kill and freeze),
:class:`FaultProxy` (latency and cut connections), :class:`ScenarioRun` (one run's
lifecycle and budget), :class:`ScenarioReport`.
"""

from sidestream.chaos.errors import ChaosError, StalledError
from sidestream.chaos.proxy import FaultProxy, ProxyFaults, ProxyStats
from sidestream.chaos.report import ScenarioReport, report_table, write_reports
from sidestream.chaos.runner import run_scenarios
from sidestream.chaos.scenario import ChaosContext, ScenarioRun, Size
from sidestream.chaos.scenarios import SCENARIOS
from sidestream.chaos.stack import PrivateStack

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
