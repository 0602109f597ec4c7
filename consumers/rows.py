"""The fast path of a sink: Kafka messages straight into binary COPY rows.

A sink that declares a `RowLayout` gets a `SinkRows` decoder: for each message it finds the
compiled row decoder of the value's writer schema (`schemas.rows`, one per framing header,
compiled on first sight) and returns a `RowRecord` — no event object, no `uuid.UUID`, no
``json.dumps``, no psycopg row formatting, no headers parsed. It returns None for anything
it does not take (no value, an unknown or foreign schema, bytes the compiled decoder
rejects); the runtime then decodes that record the careful way, into its event, so poison
records are diagnosed, and dead-lettered, exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import Message

from consumers.records import RawRecord, Record, RowRecord
from schemas import EventDeserializer
from schemas.rows import RowDecoder, RowLayout, compile_row_decoder, copy_row, row_types
from schemas.wire import CONFLUENT_HEADER_SIZE, SINGLE_OBJECT_HEADER_SIZE

__all__ = ["SinkRows", "binary_rows"]

_new_row_record = object.__new__
# The slot descriptors, to fill a RowRecord without the frozen dataclass's __init__.
_set_raw: Any = vars(Record)["raw"].__set__
_set_event: Any = vars(Record)["event"].__set__
_set_row: Any = vars(RowRecord)["row"].__set__


class SinkRows:
    """Decodes a sink's messages into `RowRecord` s, or says None (take the careful path)."""

    def __init__(self, layout: RowLayout, deserializer: EventDeserializer) -> None:
        self.layout = layout
        self._deserializer = deserializer
        # Framing header -> compiled decoder, or None: this schema's records go the careful
        # way. Only headers of schemas the deserializer knows are kept: a handful.
        self._single_object: dict[bytes, RowDecoder | None] = {}
        self._confluent: dict[bytes, RowDecoder | None] = {}

    def __call__(self, message: Message) -> RowRecord | None:
        value = message.value()
        if not value:
            return None
        try:
            decode = self._single_object[value[:SINGLE_OBJECT_HEADER_SIZE]]
        except KeyError:
            try:
                decode = self._confluent[value[:CONFLUENT_HEADER_SIZE]]
            except KeyError:
                self._learn(value, message.topic())
                return None  # this one the careful way; the next ones fast
        if decode is None:
            return None
        partition = message.partition() or 0
        offset = message.offset() or 0
        try:
            row, facts = decode(value, partition, offset)
        except Exception:
            return None  # the careful path decides, and names the problem
        record: Any = _new_row_record(RowRecord)
        # Slot stores, skipping the frozen dataclass's __init__ (~1 us per record).
        _set_raw(
            record, RawRecord.from_message(message, message.topic() or "", partition, offset, value)
        )
        _set_event(record, facts)
        _set_row(record, row)
        return record  # type: ignore[no-any-return]

    def _learn(self, value: bytes, topic: str | None) -> None:
        try:
            writer = self._deserializer.writer_schema(value, topic)
        except Exception:
            return  # bad framing, unknown schema, registry down: the careful path reports it
        table = (
            self._single_object
            if len(writer.header) == SINGLE_OBJECT_HEADER_SIZE
            else self._confluent
        )
        table[writer.header] = compile_row_decoder(self.layout, writer)


def binary_rows(layout: RowLayout, records: Sequence[Record[Any]], row_of: Any) -> list[bytes]:
    """Every record's row in binary COPY form: a `RowRecord`'s own, else ``row_of(record)``
    (the careful path's tuple) encoded the same way."""
    types = row_types(layout)
    return [
        record.row if type(record) is RowRecord else copy_row(types, row_of(record))
        for record in records
    ]
