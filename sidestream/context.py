"""What every command needs: settings read once at the edge, and logging set up."""

from __future__ import annotations

import functools
import sys

from rich.console import Console

from runtime import Settings, configure_logging, load_settings
from runtime.ports import announce_ready

# Piped output (CI logs, files) gets wide tables instead of rich's default 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@functools.cache
def settings() -> Settings:
    """Settings from the environment, read once per process (raises ConfigError)."""
    loaded = load_settings()
    configure_logging(loaded.log_level, loaded.log_format)
    # A parent that started us on port 0 reads the ports our servers bind from this file.
    announce_ready(loaded.ready_file)
    return loaded
