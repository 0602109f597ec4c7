from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import errors

from runtime.retry import Backoff, is_poison, is_transient, is_transient_database_error


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


def test_a_connection_error_is_transient_but_not_a_database_error() -> None:
    assert is_transient(ConnectionError("refused"))
    assert is_transient(TimeoutError())
    assert not is_transient_database_error(ConnectionError("refused"))
    assert is_transient_database_error(errors.SerializationFailure())
    assert not is_transient_database_error(errors.UniqueViolation())


def test_backoff_expires_only_past_its_deadline() -> None:
    assert not Backoff().expired(1e9)  # no deadline: retry for as long as it runs
    bounded = Backoff(deadline_s=30.0)
    assert not bounded.expired(30.0)
    assert bounded.expired(30.1)
