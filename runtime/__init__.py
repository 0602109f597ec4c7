"""Sidestream's shared runtime: settings, logging, metrics, client factories, migrations,
and the primitives every worker shares: process lifecycle (:mod:`runtime.lifecycle`),
retry (:mod:`runtime.retry`), child-process environment (:mod:`runtime.environment`) and
the error root (:class:`runtime.errors.SidestreamError`).

Every other package may import this one; it imports none of them.
"""

from runtime.errors import ConfigError, RuntimeSetupError, SidestreamError, StackError
from runtime.logs import configure_logging
from runtime.observability import ObservabilityServer, new_registry
from runtime.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "ObservabilityServer",
    "RuntimeSetupError",
    "Settings",
    "SidestreamError",
    "StackError",
    "configure_logging",
    "load_settings",
    "new_registry",
]
