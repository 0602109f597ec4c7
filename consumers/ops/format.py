"""Small renderings shared by the operator tools' front ends (the CLI and the console)."""

from __future__ import annotations

__all__ = ["age"]


def age(seconds: float | None) -> str:
    """A duration as an operator reads it: ``42s``, ``3m 05s``, ``2h 10m``, ``4d 03h``
    (``?`` when unknown)."""
    if seconds is None:
        return "?"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600:02d}h"
