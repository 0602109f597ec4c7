"""Which failures are worth retrying, and how long to wait between tries.

Transient: the database went away or asked us to try again (connection lost, admin
shutdown, serialization failure, deadlock). Poison: the data itself is wrong for the
table (SQLSTATE classes 22 "data exception" and 23 "integrity constraint violation");
retrying those can never succeed, so the record goes to the dead-letter topic.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg

_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "58")  # connection, resources, operator, system
_TRANSIENT_SQLSTATES = ("40001", "40P01", "55P03")  # serialization, deadlock, lock not available


def is_transient(exc: BaseException) -> bool:
    """True if retrying the same work later may succeed."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # No SQLSTATE: the connection broke before the server could answer (or the pool
    # could not hand out a connection in time).
    return isinstance(
        exc, psycopg.OperationalError | psycopg.InterfaceError | ConnectionError | TimeoutError
    )


def is_poison(exc: BaseException) -> bool:
    """True if the failure is caused by the data of a row (SQLSTATE class 22 or 23)."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in ("22", "23")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base·2ⁿ)]."""

    base_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, attempt: int, rand: random.Random | None = None) -> float:
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt)))
        return (rand or random).uniform(0, ceiling)
