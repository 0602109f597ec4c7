"""Errors of the shared runtime: configuration and the local stack."""

from __future__ import annotations


class RuntimeSetupError(Exception):
    """Base of the runtime's errors; the CLI prints its message as one line."""


class ConfigError(RuntimeSetupError):
    """A setting is unknown or invalid. The message names the variable and the fix."""


class StackError(RuntimeSetupError):
    """A local server could not be started, found, or reached."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server
