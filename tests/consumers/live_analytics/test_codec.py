"""The faust codec is the project's Avro serializers (pure)."""

from __future__ import annotations

import pytest
from faust.serializers import codecs

from consumers.live_analytics import AvroEventCodec, Undecodable
from schemas import EventSerializer
from tests.consumers.live_analytics.support import analytics, at, audit


def test_values_decode_into_typed_events_through_faust() -> None:
    codec = AvroEventCodec(topic="sidestream.analytics")
    for event in (analytics("t1", "page_view", at(0)), audit("t1", "invoice.update", at(1))):
        value = EventSerializer().serialize(event, "sidestream.analytics")
        assert codecs.loads(codec, value) == event  # faust's own codec entry point
        assert codecs.loads(codec, codecs.dumps(codec, event)) == event


def test_bytes_that_are_not_an_event_become_a_marker_not_an_exception() -> None:
    decoded = AvroEventCodec().loads(b"not avro at all")
    assert isinstance(decoded, Undecodable)
    assert decoded.error_class == "DecodeError"


def test_only_events_are_encoded() -> None:
    with pytest.raises(TypeError, match=r"schemas\.Event"):
        AvroEventCodec().dumps({"not": "an event"})
