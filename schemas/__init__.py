"""Sidestream's event schemas: typed events, their Avro encoding, and the compatibility gate.

Publishing an event::

    serializer = EventSerializer()  # Avro single-object encoding; or schema_registry_url=...
    event = AuditEvent.new(tenant_id="t-42", producer="billing-api", actor_id="u-1", ...)
    value = serializer.serialize(event, topic)  # validated first: raises ValidationError
    producer.produce(topic, key=event.key, value=value, headers=trace_headers(traceparent))

Consuming it: ``EventDeserializer().deserialize(value, topic)`` returns the typed event, whatever
schema version or framing wrote it.
"""

from schemas.catalog import AVRO_DIR, SchemaCatalog, SchemaVersion, default_catalog, fingerprint
from schemas.compatibility import Incompatibility, check_compatibility
from schemas.errors import (
    DecodeError,
    RegistryError,
    SchemaError,
    UnknownSchemaError,
    ValidationError,
)
from schemas.events import (
    EVENT_TYPES,
    AnalyticsAlert,
    AnalyticsEvent,
    AuditEvent,
    AuditOutcome,
    ChangeKind,
    EntityChanged,
    Event,
    NotificationChannel,
    NotificationRequested,
)
from schemas.headers import TRACEPARENT_HEADER, trace_headers, traceparent_from_headers
from schemas.registry import ConfluentSchemaRegistry, InMemorySchemaRegistry, SchemaRegistry
from schemas.serde import EventDeserializer, EventSerializer, validate

__all__ = [
    "AVRO_DIR",
    "EVENT_TYPES",
    "TRACEPARENT_HEADER",
    "AnalyticsAlert",
    "AnalyticsEvent",
    "AuditEvent",
    "AuditOutcome",
    "ChangeKind",
    "ConfluentSchemaRegistry",
    "DecodeError",
    "EntityChanged",
    "Event",
    "EventDeserializer",
    "EventSerializer",
    "InMemorySchemaRegistry",
    "Incompatibility",
    "NotificationChannel",
    "NotificationRequested",
    "RegistryError",
    "SchemaCatalog",
    "SchemaError",
    "SchemaRegistry",
    "SchemaVersion",
    "UnknownSchemaError",
    "ValidationError",
    "check_compatibility",
    "default_catalog",
    "fingerprint",
    "trace_headers",
    "traceparent_from_headers",
    "validate",
]
