"""What every command needs: settings read once at the edge, and logging set up."""

from __future__ import annotations

import functools
import sys

from rich.console import Console

from runtime import Settings, configure_logging, load_settings
from runtime.outages import install_pool_log_filter

# Piped output (CI logs, files) gets wide tables instead of rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@functools.cache
def settings() -> Settings:
    """Settings from the environment, read once per process (raises ConfigError)."""
    loaded = load_settings()
    configure_logging(loaded.log_level, loaded.log_format)
    # Every psycopg pool of the process (sync or async): one line per outage, not per retry.
    install_pool_log_filter(loaded.profile)
    return loaded
