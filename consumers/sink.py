"""The contract every sink implements; the batch runtime does everything else.

A sink turns a batch of decoded records into rows, inside a Postgres transaction the
runtime owns. Optionally it also has ``row_decoder(deserializer) -> SinkRows``: the runtime
then hands it `consumers.records.RowRecord` s, decoded straight into rows, for every
message that decoder takes, and `Record` s for the rest (see `consumers.rows`). It must
not commit, must not loop over Kafka, and must tolerate replays
(rows carry ``event_id``; duplicates are skipped, never double-counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from consumers.bulk import Table
from consumers.records import Record
from schemas import Event

__all__ = ["Sink", "TableSink"]


class Sink(Protocol):
    """Writes a batch of records into Postgres within the runtime's transaction."""

    @property
    def name(self) -> str:
        """Short name: the worker name (``sidestream worker run <name>``), metric label."""
        ...

    @property
    def event_type(self) -> type[Event]:
        """The event class this sink accepts; anything else on its topic is poison."""
        ...

    def write(self, records: Sequence[Record[Any]], tx: psycopg.Connection[Any]) -> int:
        """Write ``records``; return how many rows were new (replayed ones are skipped).

        Raise the database's own error for bad data (SQLSTATE class 22/23): the runtime
        then bisects the batch and sends the offending records to the dead-letter topic.
        """
        ...


class TableSink(Sink, Protocol):
    """A built-in sink: lands its event type in one table (operators are shown it)."""

    @property
    def table(self) -> Table:
        """The table its rows land in."""
        ...
