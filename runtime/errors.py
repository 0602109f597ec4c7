"""Errors of the shared runtime, and the root of every Sidestream error.

Each package keeps one small tree of its own (``SchemaError``, ``ProducerError``,
``ConsumerError``, ``DeliveryError``, ``LiveAnalyticsError``, ``ServicesError``,
``CacheError``, ``ApiError``, ...), and every tree hangs under :class:`SidestreamError`, so a
caller can tell "one of ours, with a readable message" from a bug in one ``except``. Transient
errors additionally subclass :class:`ConnectionError` / :class:`TimeoutError`, which is what
the retry classifiers look at.
"""

from __future__ import annotations


class SidestreamError(Exception):
    """Root of every error Sidestream raises on purpose; the message is one readable line."""


class RuntimeSetupError(SidestreamError):
    """Base of the runtime's errors; the CLI prints its message as one line."""


class ConfigError(RuntimeSetupError):
    """A setting is unknown or invalid. The message names the variable and the fix."""


class StackError(RuntimeSetupError):
    """A local server could not be started, found, or reached."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server
