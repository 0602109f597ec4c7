"""Which failures are worth retrying, and how long to wait between tries.

Shared by every retry loop (the consumers' batch runtime, the outbox relay, delivery,
live analytics): one transient classifier, one :class:`Backoff`.

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


def is_transient_database_error(exc: BaseException) -> bool:
    """True if Postgres (or the connection to it) failed in a way a later try may not."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    # No SQLSTATE: the connection broke before the server could answer.
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def is_transient(exc: BaseException) -> bool:
    """True if retrying the same work later may succeed: a transient database error, or
    any :class:`ConnectionError` / :class:`TimeoutError` (e.g. the pool could not hand out
    a connection in time, a Redis or Kafka call that the house style marks transient)."""
    if getattr(exc, "sqlstate", None):
        return is_transient_database_error(exc)
    return is_transient_database_error(exc) or isinstance(exc, ConnectionError | TimeoutError)


def is_poison(exc: BaseException) -> bool:
    """True if the failure is caused by the data of a row (SQLSTATE class 22 or 23)."""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in ("22", "23")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: delay n is uniform in [0, min(cap, base·2ⁿ)].

    ``deadline_s`` (None: none) bounds how long a caller keeps failing before it gives up
    or reports not ready; :meth:`expired` answers it, the caller decides what giving up
    means.
    """

    base_s: float = 0.1
    cap_s: float = 5.0
    deadline_s: float | None = None

    def delay(self, attempt: int, rand: random.Random | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 0)."""
        ceiling = min(self.cap_s, self.base_s * (2 ** max(0, attempt)))
        return (rand or random).uniform(0, ceiling)

    def expired(self, failing_for_s: float) -> bool:
        """True once failures have lasted longer than the deadline (never without one)."""
        return self.deadline_s is not None and failing_for_s > self.deadline_s
