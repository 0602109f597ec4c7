"""Human output: the two consoles every command and developer tool prints to.

One pair per process, so progress bars, tables and one-line errors interleave correctly.
Piped output (CI logs, files) gets wide lines instead of rich's default 80 columns.
"""

from __future__ import annotations

import sys

from rich.console import Console

__all__ = ["console", "err_console"]

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
