"""Compiled decoders: a message value straight into an event, without fastavro.

Decoding is on the hot path of every sink worker, so each (writer schema, event class) pair gets a
*compiled* decoder, like the encoders in `schemas._codec`: a straight-line Python function
generated from the two schemas, which reads the Avro body with a few byte operations per field
(one-byte lengths and indexes inline, the rest through small helpers) and builds the frozen
dataclass without running its ``__init__``: about 5 us for an AuditEvent against 17 us for
fastavro's ``schemaless_reader`` and the dataclass constructor (see
``devtools/bench/serde.py``, ``sidestream bench --section serde``).

Compiled decoders exist for the writer schema equal to the current one and for other versions
whose differences Avro resolution settles by field name alone: fields the reader lacks are read
and dropped, fields the writer lacks take their default. Anything else (a changed field type, a
type no kind covers, aliases) gets no compiled decoder, and its records take the careful path,
fastavro's schema resolution, as before.

A compiled decoder is strict: it raises `MalformedRecordError` for bytes that are not valid Avro
where fastavro would still return something (a negative enum index, a boolean byte of 2, ...),
and the deserializer reports a `DecodeError`. On any other failure (truncation, bad UTF-8,
trailing bytes, a value beyond datetime's range) the careful path runs and decides: it raises the
`DecodeError` it always raised, or returns the event, so no valid record depends on this module.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from schemas._binary import compile_function, decoder_runtime
from schemas._codec import Decoder, EventCodec, strip_logical_types
from schemas._kinds import _Kind, _kind_for, _StringMap
from schemas.errors import SchemaError
from schemas.events import Event

__all__ = ["Decoder", "fast_decoder"]

logger = logging.getLogger(__name__)

# Keys that change neither how a value is written nor how it resolves ("name" does: it stays).
_IRRELEVANT_KEYS = frozenset({"doc", "default", "aliases", "order"})
_NO_VALUE = object()


class _UnsupportedError(Exception):
    """This writer/reader pair gets no compiled decoder (the message says why)."""


def fast_decoder(
    codec: EventCodec,
    writer_fingerprint: bytes,
    writer_schema: Mapping[str, Any],
    body_offset: int,
) -> Decoder | None:
    """The compiled decoder of records written with `writer_schema` into `codec`'s class, for
    values whose Avro body starts at `body_offset`; None when this pair has none (its records
    take the careful path). Compiled once per codec, writer fingerprint and offset."""
    key = (writer_fingerprint, body_offset)
    try:
        return codec.fast_decoders[key]
    except KeyError:
        pass
    try:
        decoder: Decoder | None = _compile(codec, writer_fingerprint, writer_schema, body_offset)
    except (_UnsupportedError, SchemaError) as exc:
        logger.info(
            "records of %s written with schema %s take the fastavro path: %s",
            codec.subject,
            writer_fingerprint.hex(),
            exc,
        )
        decoder = None
    # Two threads may both compile on first use; either result is the same function.
    codec.fast_decoders[key] = decoder
    return decoder


# --- resolution: which writer field goes where ---------------------------------------------------


def _binary_type(schema: Any) -> Any:
    """`schema` reduced to what fixes its binary encoding and its resolution: two field types
    with equal reductions are read the same way into the same values."""
    schema = strip_logical_types(schema)
    if isinstance(schema, list):
        return ("union", *(_binary_type(branch) for branch in schema))
    if isinstance(schema, Mapping):
        kept = {key: value for key, value in schema.items() if key not in _IRRELEVANT_KEYS}
        if set(kept) == {"type"}:
            return _binary_type(kept["type"])
        return tuple(
            sorted(
                (key, _binary_type(value) if key in ("type", "items", "values") else repr(value))
                for key, value in kept.items()
            )
        )
    return schema


def _plan(
    codec: EventCodec, writer_fingerprint: bytes, writer_schema: Mapping[str, Any]
) -> tuple[list[tuple[str, _Kind, bool]], list[tuple[str, _Kind, Any]]]:
    """What to read, in writer order, as ``(field, kind, keep)``, and the reader fields the writer
    lacks, with their default values (as the dataclass holds them)."""
    if writer_fingerprint == codec.current.fingerprint:
        # The same canonical form: the same fields, in the same order, with the same types.
        return [(name, kind, True) for name, kind in codec.fields], []
    reader_kinds = dict(codec.fields)
    reader_fields = {field["name"]: field for field in codec.current.schema["fields"]}
    if any("aliases" in field for field in reader_fields.values()):
        raise _UnsupportedError("the reader schema has field aliases")
    writer_fields = writer_schema.get("fields")
    if writer_schema.get("type") != "record" or not isinstance(writer_fields, list):
        raise _UnsupportedError("the writer schema is not a record")
    reads: list[tuple[str, _Kind, bool]] = []
    for field in writer_fields:
        name = field["name"]
        where = f"writer field {name!r}"
        if name not in reader_fields:
            # Read and dropped; an enum would need its class, so it gets no compiled decoder.
            reads.append((name, _kind_for(field["type"], None, where), False))
        elif _binary_type(field["type"]) == _binary_type(reader_fields[name]["type"]):
            reads.append((name, reader_kinds[name], True))
        else:
            raise _UnsupportedError(f"{where} has another type than in the reader (promotion?)")
    written = {name for name, _, _ in reads}
    defaults: list[tuple[str, _Kind, Any]] = []
    for name, kind in codec.fields:
        if name in written:
            continue
        if "default" not in reader_fields[name]:
            raise _UnsupportedError(f"reader field {name!r} has no default")
        default = reader_fields[name]["default"]
        try:
            value = kind.from_avro(default)
        except Exception:
            value = _NO_VALUE
        if value is _NO_VALUE or kind.check(value) is not None:
            raise _UnsupportedError(f"the default of {name!r} ({default!r}) does not fit its type")
        defaults.append((name, kind, value))
    return reads, defaults


# --- building the instance -------------------------------------------------------------------


_builder_classes: dict[type[Event], type | None] = {}


def _builder_class(cls: type[Event]) -> type | None:
    """A class whose instances can take `cls` as their class once filled, or None.

    A frozen dataclass's ``__init__`` sets every field through ``object.__setattr__``, a slow
    call per field (3.5 us for an AuditEvent); ``__new__`` + the slot descriptors' ``__set__``
    halves that. Faster still: fill an instance of a twin class — same base, same ``__slots__``,
    not frozen, so each field is a plain attribute store — then assign ``__class__``, which
    CPython allows between classes of identical layout (checked here once). The result is an
    ordinary, frozen instance of `cls`: equal to one built normally, same type, same slots.
    The twin shows up in the base's ``__subclasses__()``; a base or metaclass that reacts to
    subclassing, or a class with a ``__dict__``, gets no twin.
    """
    try:
        return _builder_classes[cls]
    except KeyError:
        twin = _builder_classes[cls] = _twin_class(cls)
        return twin


def _twin_class(cls: type[Event]) -> type | None:
    base = cls.__base__
    slots = cls.__dict__.get("__slots__")
    if type(cls) is not type or base is None or slots is None:
        return None
    if any("__init_subclass__" in vars(klass) for klass in base.__mro__[:-1]):
        return None
    twin = type(
        f"{cls.__name__}Builder",
        (base,),
        {
            "__slots__": slots,
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": __name__,
            "__qualname__": f"_builder_class.<{cls.__qualname__}>",
        },
    )
    probe: Any = object.__new__(twin)
    names = [field.name for field in dataclasses.fields(cls)]
    try:
        for index, name in enumerate(names):
            setattr(probe, name, index)
        probe.__class__ = cls
    except (TypeError, AttributeError):  # a different layout, or a field that is not a slot
        return None
    if hasattr(probe, "__dict__") or [getattr(probe, name) for name in names] != list(
        range(len(names))
    ):
        return None
    return twin


def _build_lines(cls: type[Event], values: dict[str, str], env: dict[str, Any]) -> list[str]:
    """Statements that return an instance of `cls` with each field set to the expression given
    in `values`, without running ``__init__`` when the class allows it."""
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    runs_code = hasattr(cls, "__post_init__") or any(
        not field.init for field in dataclasses.fields(cls)
    )
    if runs_code or not params.frozen:
        # __post_init__ (or a non-init field) may compute or check something: call the class.
        env["cls"] = cls
        return [f"return cls({', '.join(f'{name}={expr}' for name, expr in values.items())})"]
    twin = _builder_class(cls)
    if twin is not None:
        env.update(cls=cls, Builder=twin, new=object.__new__)
        return [
            "o = new(Builder)",
            *(f"o.{name} = {expr}" for name, expr in values.items()),
            "o.__class__ = cls",
            "return o",
        ]
    env.update(cls=cls, new=object.__new__, setattr_=object.__setattr__)
    return [
        "o = new(cls)",
        *(f"setattr_(o, {name!r}, {expr})" for name, expr in values.items()),
        "return o",
    ]


# --- code generation ---------------------------------------------------------------------------


def _compile(
    codec: EventCodec,
    writer_fingerprint: bytes,
    writer_schema: Mapping[str, Any],
    body_offset: int,
) -> Decoder:
    reads, defaults = _plan(codec, writer_fingerprint, writer_schema)
    env = decoder_runtime()
    body = [f"p = {body_offset}"]
    values: dict[str, str] = {}
    for index, (name, kind, keep) in enumerate(reads):
        var = f"f{index}"
        body += kind.emit_decode(var, name, env)
        if keep:
            values[name] = var
    # Past the end: a string ran off a truncated value; short of it: trailing bytes.
    body.append("if p != len(d): raise Miss")
    for name, kind, value in defaults:
        env[f"default_{name}"] = value
        # A mutable default is copied, as fastavro's reader and dataclass factories do.
        copy = isinstance(kind.value_kind, _StringMap) and value is not None
        values[name] = f"dict(default_{name})" if copy else f"default_{name}"
    body += _build_lines(codec.event_cls, {name: values[name] for name, _ in codec.fields}, env)
    env["subject"] = codec.subject
    source = "\n".join(
        [
            "def decode(d):",
            "    try:",
            *(f"        {line}" for line in body),
            "    except Malformed as exc:",
            "        raise Malformed(exc.reason, subject) from None",
        ]
    )
    where = f"<compiled decoder of {codec.current.path} from {writer_fingerprint.hex()}>"
    decoder: Decoder = compile_function(source, where, env, f"Decode a {codec.event_cls.__name__}.")
    return decoder
