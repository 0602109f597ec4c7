"""What every command needs: settings read once at the edge, and logging set up."""

from __future__ import annotations

import functools

from runtime import Settings, configure_logging, load_settings
from runtime.outages import install_pool_log_filter
from runtime.ports import announce_ready
from runtime.terminal import console, err_console

__all__ = ["console", "err_console", "settings"]


@functools.cache
def settings() -> Settings:
    """Settings from the environment, read once per process (raises ConfigError)."""
    loaded = load_settings()
    configure_logging(loaded.log_level, loaded.log_format)
    # A parent that started us on port 0 reads the ports our servers bind from this file.
    announce_ready(loaded.ready_file)
    # Every psycopg pool of the process (sync or async): one line per outage, not per retry.
    install_pool_log_filter(loaded.profile)
    return loaded
