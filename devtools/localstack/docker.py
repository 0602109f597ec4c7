"""Detecting a Docker engine (a ``docker`` client alone does not count)."""

from __future__ import annotations

import functools


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers a ping; never raises."""
    try:
        import docker  # shipped with testcontainers (a dev dependency)
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False
