"""Sidestream's shared runtime: settings, logging, metrics, client factories, local stack.

Every other package may import this one; it imports none of them.
"""

from runtime.errors import ConfigError, RuntimeSetupError, StackError
from runtime.logs import configure_logging
from runtime.observability import ObservabilityServer, new_registry
from runtime.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "ObservabilityServer",
    "RuntimeSetupError",
    "Settings",
    "StackError",
    "configure_logging",
    "load_settings",
    "new_registry",
]
