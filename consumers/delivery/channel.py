"""The contract of a delivery channel: one attempt in, one :class:`AttemptResult` out."""

from __future__ import annotations

from typing import Protocol

from consumers.delivery.policy import AttemptResult
from consumers.delivery.store import Notification


class Channel(Protocol):
    """Sends one notification once.

    ``send`` never raises for a delivery problem (a refusal, a timeout, a bad
    recipient): it returns the classified result. It finishes within ``deadline_s``,
    which the worker uses to check that a send fits in the claim's lease.
    """

    @property
    def name(self) -> str:
        """The ``channel`` column value it serves: ``EMAIL`` or ``WEBHOOK``."""
        ...

    @property
    def deadline_s(self) -> float:
        """The longest one ``send`` can take."""
        ...

    async def send(self, notification: Notification) -> AttemptResult: ...
