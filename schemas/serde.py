"""Event <-> bytes: `EventSerializer` for producers, `EventDeserializer` for consumers.

Without a registry (the default, works anywhere), values use Avro single-object encoding: the
writer schema travels as a fingerprint and is found among the versions kept in
``schemas/avro/``. With a registry, values use the Confluent wire format (schema id), registered
under the subject ``<topic>-value``. The deserializer reads both, whatever it is configured with.
"""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas._binary import MalformedRecordError
from schemas._codec import Encoder, EventCodec, build_codec
from schemas._decode import Decoder, fast_decoder
from schemas.catalog import default_catalog, fingerprint
from schemas.errors import (
    DecodeError,
    SchemaError,
    UnknownSchemaError,
    ValidationError,
)
from schemas.events import EVENT_TYPES, Event
from schemas.registry import ConfluentSchemaRegistry, SchemaRegistry
from schemas.wire import (
    CONFLUENT_HEADER_SIZE,
    SINGLE_OBJECT_HEADER_SIZE,
    confluent_header,
    parse_framing,
    single_object_header,
)

__all__ = ["EventDeserializer", "EventSerializer", "WriterSchema", "validate"]

logger = logging.getLogger(__name__)


@functools.cache
def _codecs() -> dict[type[Event], EventCodec]:
    """One compiled codec per event class, built once per process."""
    catalog = default_catalog()
    return {cls: build_codec(cls, catalog) for cls in EVENT_TYPES.values()}


def _codec_for(event: object) -> EventCodec:
    codec = _codecs().get(type(event))  # type: ignore[arg-type]
    if codec is None:
        raise ValidationError(
            f"unknown event type: {type(event).__qualname__} is not one of "
            f"{', '.join(cls.__name__ for cls in EVENT_TYPES.values())}",
            field=None,
        )
    return codec


def validate(event: Event) -> None:
    """Check `event` against its schema; raise `ValidationError` naming the offending field.

    The serializer does the same on every call; use this to fail early, e.g. in a request
    handler before any side effect.
    """
    _codec_for(event).validate(event)


def _registry_from(
    url: str | None, config: Mapping[str, Any] | None, registry: SchemaRegistry | None
) -> SchemaRegistry | None:
    if registry is not None:
        if url is not None or config is not None:
            raise ValueError(
                "pass either schema_registry or schema_registry_url/schema_registry_config"
            )
        if not isinstance(registry, SchemaRegistry):
            raise TypeError(f"schema_registry must have register() and lookup(), got {registry!r}")
        return registry
    if url is None and config is not None:
        url = config.get("url")
        if not isinstance(url, str):
            raise ValueError("schema_registry_config needs a 'url' (or pass schema_registry_url)")
    if url is None:
        return None
    return ConfluentSchemaRegistry(url=url, config=config)


class EventSerializer:
    """Validates and encodes events for one producer. Safe to share between threads.

    `schema_registry_url` / `schema_registry_config` (keys of confluent-kafka's
    ``SchemaRegistryClient``) select the Confluent wire format, as does an injected
    `schema_registry`; with none of them, values use Avro single-object encoding.
    """

    def __init__(
        self,
        *,
        schema_registry_url: str | None = None,
        schema_registry_config: Mapping[str, Any] | None = None,
        schema_registry: SchemaRegistry | None = None,
    ) -> None:
        self._registry = _registry_from(
            schema_registry_url, schema_registry_config, schema_registry
        )
        codecs = _codecs()
        # Single-object plans are complete up front; Confluent plans are added per topic, on
        # first use, once the schema is registered under "<topic>-value".
        self._plans: dict[type[Event], tuple[Encoder, bytes]] = {
            cls: (codec.encode, single_object_header(codec.current.fingerprint))
            for cls, codec in codecs.items()
        }
        self._topic_plans: dict[tuple[type[Event], str], tuple[Encoder, bytes]] = {}

    @property
    def schema_registry(self) -> SchemaRegistry | None:
        """The registry in use, or None for single-object encoding."""
        return self._registry

    def serialize(self, event: Event, topic: str) -> bytes:
        """The message value for `event` on `topic`.

        Raises `ValidationError` (naming the field) if the event does not match its schema,
        `RegistryError` if the schema cannot be registered. Never sends anything.
        """
        if self._registry is None:
            plan = self._plans.get(type(event))
        else:
            plan = self._topic_plans.get((type(event), topic))
        if plan is None:
            plan = self._plan(event, topic)
        encode, header = plan
        return encode(event, header)

    def _plan(self, event: Event, topic: str) -> tuple[Encoder, bytes]:
        codec = _codec_for(event)
        if self._registry is None:  # pragma: no cover - every event type has a plan
            return self._plans[codec.event_cls]
        if not topic:
            raise ValueError("topic must not be empty: it names the registry subject")
        # Validate before registering: an invalid event must not leave a trace in the registry.
        codec.validate(event)
        subject = f"{topic}-value"
        schema_id = self._registry.register(subject, codec.current.schema_str)
        logger.info(
            "registered %s v%d as schema id %d under %s",
            codec.subject,
            codec.current.version,
            schema_id,
            subject,
        )
        plan = (codec.encode, confluent_header(schema_id))
        self._topic_plans[(codec.event_cls, topic)] = plan
        return plan


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """Which schema wrote a message value, and where its Avro body starts."""

    header: bytes
    """The value's framing prefix (marker + fingerprint, or magic byte + schema id)."""
    subject: str
    """The subject (event class) whose current schema reads it."""
    fingerprint: bytes
    schema: Mapping[str, Any]

    @property
    def body_offset(self) -> int:
        return len(self.header)


class EventDeserializer:
    """Decodes message values into typed events, for one consumer. Safe to share between threads.

    Reads both framings whatever it is configured with; a registry is needed only for the
    Confluent wire format. Records written with an older schema version come back as the current
    event class (Avro schema resolution fills new fields from their defaults).

    The first record of each writer schema takes the careful path (framing parsed, schema looked
    up, fastavro); it leaves a compiled decoder (`schemas._decode`) keyed by the value's header,
    which every later record with that header takes directly.
    """

    def __init__(
        self,
        *,
        schema_registry_url: str | None = None,
        schema_registry_config: Mapping[str, Any] | None = None,
        schema_registry: SchemaRegistry | None = None,
    ) -> None:
        self._registry = _registry_from(
            schema_registry_url, schema_registry_config, schema_registry
        )
        self._catalog = default_catalog()
        codecs = _codecs()
        self._codec_by_subject = {codec.subject: codec for codec in codecs.values()}
        # A record name maps to the class of its subject: that is how a writer schema fetched
        # from the registry, possibly a version unknown here, finds its reader.
        self._codec_by_name = {
            version.full_name: self._codec_by_subject[version.subject]
            for subject in self._catalog.subjects
            if subject in self._codec_by_subject
            for version in self._catalog.versions(subject)
        }
        # Registry id -> (codec, writer fingerprint, writer schema); ids are immutable.
        self._by_schema_id: dict[int, tuple[EventCodec, bytes, Mapping[str, Any]]] = {}
        # Compiled decoders by the value's whole header: marker + fingerprint (10 bytes), or
        # magic byte + schema id (5 bytes). One slice and one dict lookup find the decoder.
        self._single_object: dict[bytes, Decoder] = {}
        self._confluent: dict[bytes, Decoder] = {}

    def deserialize(self, data: bytes, topic: str | None = None) -> Event:
        """The event encoded in `data` (a message value read from `topic`).

        Raises `DecodeError` for bytes that are not an encoded event (bad framing, truncated or
        corrupt body), `UnknownSchemaError` when the writer schema is not known here, and
        `UnknownSchemaError` for Confluent-framed data when no registry is configured,
        `RegistryError` when the configured registry cannot be reached.
        """
        if type(data) is not bytes:
            data = bytes(data)  # a bytearray or memoryview: slices must be hashable
        decode = self._single_object.get(data[:SINGLE_OBJECT_HEADER_SIZE])
        if decode is None:
            decode = self._confluent.get(data[:CONFLUENT_HEADER_SIZE])
            if decode is None:
                return self._deserialize_carefully(data, topic)
        try:
            return decode(data)
        except MalformedRecordError as exc:
            raise DecodeError(
                f"cannot decode {exc.subject} record"
                + (f" from topic {topic}" if topic else "")
                + f": {exc.reason}",
                topic=topic,
            ) from exc
        except Exception:  # noqa: S110 - the careful path below decides, and names the problem
            pass
        return self._deserialize_carefully(data, topic)

    def writer_schema(self, data: bytes, topic: str | None = None) -> WriterSchema:
        """The schema that wrote `data`, from its framing (a registry lookup at most once per
        schema id). Raises like `deserialize` for a bad framing or an unknown schema."""
        framing = parse_framing(data, topic=topic)
        if framing.fingerprint is not None:
            version = self._catalog.by_fingerprint(framing.fingerprint)
            if version is None or version.subject not in self._codec_by_subject:
                raise UnknownSchemaError(
                    f"no schema in schemas/avro/ has fingerprint {framing.fingerprint.hex()}",
                    fingerprint=framing.fingerprint,
                    topic=topic,
                )
            subject, writer_fingerprint, schema = (
                version.subject,
                version.fingerprint,
                version.schema,
            )
        else:
            assert framing.schema_id is not None
            codec, writer_fingerprint, schema = self._writer_for_id(framing.schema_id, topic)
            subject = codec.subject
        return WriterSchema(bytes(data[: framing.body_offset]), subject, writer_fingerprint, schema)

    def _deserialize_carefully(self, data: bytes, topic: str | None) -> Event:
        """`deserialize` through parsed framing, schema lookup and fastavro; on the way, leave
        the compiled decoder of this header for the records that follow."""
        framing = parse_framing(data, topic=topic)
        if framing.fingerprint is not None:
            version = self._catalog.by_fingerprint(framing.fingerprint)
            codec = None if version is None else self._codec_by_subject.get(version.subject)
            if version is None or codec is None:
                raise UnknownSchemaError(
                    f"no schema in schemas/avro/ has fingerprint {framing.fingerprint.hex()}"
                    + (f" (topic {topic})" if topic else ""),
                    fingerprint=framing.fingerprint,
                    topic=topic,
                )
            writer_fingerprint, writer_schema = version.fingerprint, version.schema
            table = self._single_object
        else:
            assert framing.schema_id is not None
            codec, writer_fingerprint, writer_schema = self._writer_for_id(framing.schema_id, topic)
            table = self._confluent
        header = data[: framing.body_offset]
        if header not in table:
            decoder = fast_decoder(codec, writer_fingerprint, writer_schema, framing.body_offset)
            if decoder is not None:
                table[header] = decoder
        stream = io.BytesIO(data)
        stream.seek(framing.body_offset)
        try:
            event = codec.decode(stream, writer_fingerprint, writer_schema)
        except SchemaError:
            raise
        except Exception as exc:
            # fastavro signals bad bytes with whatever the failing read raised (EOFError,
            # UnicodeDecodeError, IndexError, SchemaResolutionError, ...).
            raise DecodeError(
                f"cannot decode {codec.subject} record"
                + (f" from topic {topic}" if topic else "")
                + f": {type(exc).__name__}: {exc}",
                topic=topic,
            ) from exc
        if stream.tell() != len(data):
            raise DecodeError(
                f"{len(data) - stream.tell()} trailing bytes after the {codec.subject} record"
                + (f" from topic {topic}" if topic else ""),
                topic=topic,
            )
        return event

    def _writer_for_id(
        self, schema_id: int, topic: str | None
    ) -> tuple[EventCodec, bytes, Mapping[str, Any]]:
        found = self._by_schema_id.get(schema_id)
        if found is not None:
            return found
        if self._registry is None:
            # Not a registry outage (retrying cannot help): without a registry this reader
            # can never learn the writer schema, so the record is poison for it.
            raise UnknownSchemaError(
                f"record in Confluent wire format (schema id {schema_id})"
                + (f" on topic {topic}" if topic else "")
                + " but no schema registry is configured: pass schema_registry_url",
                schema_id=schema_id,
                topic=topic,
            )
        text = self._registry.lookup(schema_id)
        try:
            schema = json.loads(text)
            name = str(schema["name"])
            namespace = schema.get("namespace")
            schema_fingerprint = fingerprint(schema)
        except Exception as exc:
            raise UnknownSchemaError(
                f"schema id {schema_id} is not an Avro record schema", schema_id=schema_id
            ) from exc
        full_name = name if "." in name or not namespace else f"{namespace}.{name}"
        codec = self._codec_by_name.get(full_name)
        if codec is None:
            raise UnknownSchemaError(
                f"schema id {schema_id} is record {full_name}, which no event class reads",
                schema_id=schema_id,
                topic=topic,
            )
        # Readers are cached by writer fingerprint, so a registry copy of a schema kept in
        # schemas/avro/ shares the reader of the single-object path.
        found = (codec, schema_fingerprint, schema)
        self._by_schema_id[schema_id] = found
        return found
