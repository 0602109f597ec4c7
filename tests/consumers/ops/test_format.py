"""Durations as the operator tools print them."""

from __future__ import annotations

import pytest

from consumers.ops.format import age


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "?"), (0, "0s"), (59.9, "59s"), (185, "3m 05s"), (7800, "2h 10m"), (356400, "4d 03h")],
)
def test_age(seconds: float | None, text: str) -> None:
    assert age(seconds) == text
