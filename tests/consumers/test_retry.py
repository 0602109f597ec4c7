from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import errors

from consumers.retry import Backoff, is_poison, is_transient


@pytest.mark.parametrize(
    ("error", "transient", "poison"),
    [
        (errors.SerializationFailure(), True, False),
        (errors.DeadlockDetected(), True, False),
        (errors.AdminShutdown(), True, False),
        (errors.CannotConnectNow(), True, False),
        (psycopg.OperationalError("connection lost"), True, False),
        (errors.UniqueViolation(), False, True),
        (errors.CheckViolation(), False, True),
        (errors.InvalidTextRepresentation(), False, True),
        (errors.UndefinedTable(), False, False),
        (ValueError("bug"), False, False),
    ],
)
def test_error_classification(error: BaseException, transient: bool, poison: bool) -> None:
    assert is_transient(error) is transient
    assert is_poison(error) is poison


def test_backoff_grows_exponentially_within_the_cap() -> None:
    backoff = Backoff(base_s=0.1, cap_s=2.0)
    rand = random.Random(7)
    delays = [[backoff.delay(attempt, rand) for _ in range(200)] for attempt in range(8)]
    assert all(0 <= d <= 0.1 for d in delays[0])
    assert all(0 <= d <= 0.4 for d in delays[2])
    assert all(0 <= d <= 2.0 for d in delays[7])
    assert max(delays[7]) > 1.0  # full jitter reaches towards the cap
