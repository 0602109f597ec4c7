"""Schema ↔ table contracts: where each field of a sink's event ends up in its table.

Every field of every version of a sink's subject is declared here, as one of

- `Column` — stored as it is in this column;
- `JsonColumn` — stored in this ``json``/``jsonb`` column (maps and records);
- `NotStored` — deliberately dropped, with the reason.

`check_contracts` (run by ``make schemas-check``) fails when a schema version has a field its
sink neither maps nor ignores — a new field would otherwise be accepted by the compatibility
gate and silently dropped — and when a mapped column or table is missing from the migrations
(parsed with ``pglast``, PostgreSQL's own parser). Subjects that no sink writes to a table are
listed in `NO_TABLE`, with the reason.

The declarations sit apart from the sinks' row building on purpose: they are read by a gate,
not run per record.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.migrations import Migration
from schemas import AVRO_DIR, SchemaCatalog

__all__ = [
    "CONTRACTS",
    "NO_TABLE",
    "Column",
    "ContractProblem",
    "FieldMapping",
    "JsonColumn",
    "NotStored",
    "SinkContract",
    "check_contracts",
    "migrated_tables",
]


@dataclass(frozen=True, slots=True)
class Column:
    """The field is stored as it is in column `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class JsonColumn:
    """The field is stored in the ``json``/``jsonb`` column `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class NotStored:
    """The field is deliberately not stored; `reason` says why."""

    reason: str

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError("NotStored needs a reason")


FieldMapping = Column | JsonColumn | NotStored


@dataclass(frozen=True, slots=True)
class SinkContract:
    """How the sink `sink` (a worker name) stores each field of `subject` in `table`."""

    sink: str
    subject: str
    table: str
    fields: Mapping[str, FieldMapping]


_ONE_TYPE = NotStored("the table holds one event type, so the subject is implied")

_ENVELOPE: Mapping[str, FieldMapping] = {
    "event_id": Column("event_id"),
    "event_type": _ONE_TYPE,
    "tenant_id": Column("tenant_id"),
    "occurred_at": Column("occurred_at"),
    "producer": Column("producer"),
    "schema_version": Column("schema_version"),
}
"""The envelope every event shares, stored as it is by the event tables (audit, analytics)."""

CONTRACTS: tuple[SinkContract, ...] = (
    SinkContract(
        sink="audit",
        subject="audit_event",
        table="audit_events",
        fields={
            **_ENVELOPE,
            "actor_id": Column("actor_id"),
            "action": Column("action"),
            "resource_type": Column("resource_type"),
            "resource_id": Column("resource_id"),
            "outcome": Column("outcome"),
            "ip": Column("ip"),
            "details": JsonColumn("details"),
        },
    ),
    SinkContract(
        sink="analytics",
        subject="analytics_event",
        table="analytics_events",
        fields={
            **_ENVELOPE,
            "name": Column("name"),
            "user_id": Column("user_id"),
            "session_id": Column("session_id"),
            "properties": JsonColumn("properties"),
            "value": Column("value"),
            "platform": Column("platform"),
        },
    ),
    SinkContract(
        sink="notifications",
        subject="notification_requested",
        table="notifications",
        fields={
            "event_id": Column("event_id"),
            "event_type": _ONE_TYPE,
            "tenant_id": Column("tenant_id"),
            "occurred_at": Column("requested_at"),
            "producer": NotStored(
                "delivery does not depend on who asked; the event stays on the topic"
            ),
            "schema_version": NotStored(
                "a pending notification is delivered the same whatever version requested it"
            ),
            "notification_id": Column("notification_id"),
            "channel": Column("channel"),
            "recipient": Column("recipient"),
            "template": Column("template"),
            "params": JsonColumn("params"),
            "dedupe_key": Column("dedupe_key"),
            "endpoint_id": Column("endpoint_id"),
        },
    ),
)
"""One contract per sink in `consumers.worker.SINKS`."""

NO_TABLE: Mapping[str, str] = {
    "entity_changed": "the invalidation consumer (services/invalidation_consumer.py) turns it "
    "into Redis tombstones; no table",
    "analytics_alert": "published by the live analytics worker for downstream alerting; no sink "
    "stores it",
}
"""Subjects that no sink writes to a table, with the reason."""


@dataclass(frozen=True, slots=True)
class ContractProblem:
    """A field, column or table that breaks a sink's contract; the message says the fix."""

    sink: str
    field: str | None
    message: str

    def __str__(self) -> str:
        return self.message


_CONTRACTS_FILE = "consumers/sinks/contracts.py"


def _type_name(column_def: Any) -> str:
    names = [name.sval for name in column_def.typeName.names]
    # Postgres names an array type by its element type with a leading underscore.
    return ("_" if column_def.typeName.arrayBounds else "") + str(names[-1])


def migrated_tables(migrations: Iterable[Migration]) -> dict[str, dict[str, str]]:
    """The tables the `migrations` leave behind: table → column → type (``text``, ``jsonb``…).

    Follows ``CREATE TABLE`` (partitions of a table add no columns), ``ALTER TABLE … ADD / DROP
    COLUMN``, ``ALTER TABLE … RENAME [COLUMN]`` and ``DROP TABLE``, in migration order. Schema
    qualifiers are ignored: migrations run with ``search_path`` set to the target schema.
    Raises `ValueError` naming the migration when one does not parse.
    """
    try:
        from pglast import ast, enums, parse_sql
        from pglast.parser import ParseError
    except ImportError as exc:  # pragma: no cover - pglast is a dev dependency
        raise ValueError(
            f"reading the migrations needs pglast ({exc}): install the dev extras (make setup)"
        ) from exc
    tables: dict[str, dict[str, str]] = {}
    for migration in sorted(migrations, key=lambda m: (m.source, m.version)):
        try:
            statements = parse_sql(migration.sql)
        except ParseError as exc:
            raise ValueError(
                f"{migration.source} migration {migration.version:04d}_{migration.name}.sql "
                f"does not parse: {exc}"
            ) from exc
        for raw in statements:
            stmt = raw.stmt
            if isinstance(stmt, ast.CreateStmt) and stmt.relation is not None:
                if stmt.partbound is not None:
                    continue  # a partition: its columns are its parent's
                columns = tables.setdefault(str(stmt.relation.relname), {})
                for element in stmt.tableElts or ():
                    if isinstance(element, ast.ColumnDef):
                        columns[str(element.colname)] = _type_name(element)
            elif isinstance(stmt, ast.AlterTableStmt) and stmt.relation is not None:
                columns = tables.setdefault(str(stmt.relation.relname), {})
                for cmd in stmt.cmds or ():
                    if cmd.subtype == enums.AlterTableType.AT_AddColumn:
                        columns[str(cmd.def_.colname)] = _type_name(cmd.def_)
                    elif cmd.subtype == enums.AlterTableType.AT_DropColumn:
                        columns.pop(str(cmd.name), None)
                    elif cmd.subtype == enums.AlterTableType.AT_AlterColumnType:
                        columns[str(cmd.name)] = _type_name(cmd.def_)
            elif isinstance(stmt, ast.RenameStmt) and stmt.relation is not None:
                name, new_name = str(stmt.relation.relname), str(stmt.newname)
                if stmt.renameType == enums.ObjectType.OBJECT_COLUMN and name in tables:
                    tables[name][new_name] = tables[name].pop(str(stmt.subname), "")
                elif stmt.renameType == enums.ObjectType.OBJECT_TABLE and name in tables:
                    tables[new_name] = tables.pop(name)
            elif (
                isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_TABLE
            ):
                for qualified in stmt.objects or ():
                    tables.pop(qualified[-1].sval, None)
    return tables


def _consumer_migrations() -> list[Migration]:
    from consumers.migrations_source import CONSUMER_MIGRATIONS

    return CONSUMER_MIGRATIONS.load()


def _sink_subjects() -> dict[str, str]:
    # Imported here: the worker module pulls in every sink, which the declarations above do not
    # need.
    from consumers.worker import SINKS

    # Building a sink is cheap and touches nothing: it only declares its name and event type.
    return {name: factory().event_type.SUBJECT for name, factory in SINKS.items()}


def check_contracts(
    root: Path = AVRO_DIR,
    *,
    migrations: Sequence[Migration] | None = None,
    contracts: Sequence[SinkContract] = CONTRACTS,
    no_table: Mapping[str, str] = NO_TABLE,
    sinks: Mapping[str, str] | None = None,
) -> list[ContractProblem]:
    """Check every sink contract against the schemas under `root` and the migrations.

    `migrations` defaults to the consumers package's, `sinks` (worker name → subject) to
    `consumers.worker.SINKS`. Returns every problem, empty when all contracts hold. Raises
    `schemas.SchemaError` for an invalid schema, `ValueError` for a migration that does not
    parse.
    """
    catalog = SchemaCatalog.load(root)
    tables = migrated_tables(_consumer_migrations() if migrations is None else migrations)
    by_sink = {contract.sink: contract for contract in contracts}
    problems: list[ContractProblem] = []
    for sink, subject in sorted((_sink_subjects() if sinks is None else sinks).items()):
        contract = by_sink.get(sink)
        if contract is None:
            problems.append(
                ContractProblem(
                    sink,
                    None,
                    f"sink {sink}: no contract for its subject {subject}: add a SinkContract "
                    f"to {_CONTRACTS_FILE} mapping every field to a column",
                )
            )
        elif contract.subject != subject:
            problems.append(
                ContractProblem(
                    sink,
                    None,
                    f"sink {sink}: its contract is for {contract.subject} but it consumes "
                    f"{subject}: fix the subject in {_CONTRACTS_FILE}",
                )
            )
    covered = {contract.subject for contract in contracts} | set(no_table)
    for subject in catalog.subjects:
        if subject not in covered:
            problems.append(
                ContractProblem(
                    "-",
                    None,
                    f"subject {subject}: no sink contract and not in NO_TABLE: add a "
                    f"SinkContract for the sink that stores it to {_CONTRACTS_FILE}, or list it "
                    "in NO_TABLE with the reason",
                )
            )
    for contract in contracts:
        problems.extend(_check_contract(contract, catalog, tables))
    return problems


def _check_contract(
    contract: SinkContract, catalog: SchemaCatalog, tables: Mapping[str, Mapping[str, str]]
) -> list[ContractProblem]:
    sink, table = contract.sink, contract.table
    problems: list[ContractProblem] = []
    if contract.subject not in catalog.subjects:
        return [
            ContractProblem(
                sink,
                None,
                f"sink {sink}: its contract names subject {contract.subject}, which has no "
                f"schema: fix the subject in {_CONTRACTS_FILE}",
            )
        ]
    seen: set[str] = set()
    for version in catalog.versions(contract.subject):
        for avro_field in version.schema["fields"]:
            name = str(avro_field["name"])
            seen.add(name)
            if name not in contract.fields:
                problems.append(
                    ContractProblem(
                        sink,
                        name,
                        f"sink {sink}: field {name!r} of {contract.subject} v{version.version} "
                        f"is neither stored nor ignored: map it in {_CONTRACTS_FILE} to a "
                        f"Column/JsonColumn of {table} (adding the column in a new migration "
                        "and to the sink's rows), or declare it NotStored(reason)",
                    )
                )
    for name, mapping in contract.fields.items():
        if name not in seen:
            problems.append(
                ContractProblem(
                    sink,
                    name,
                    f"sink {sink}: field {name!r} is declared but no version of "
                    f"{contract.subject} has it: remove it from {_CONTRACTS_FILE} (a typo?)",
                )
            )
            continue
        if isinstance(mapping, NotStored):
            continue
        columns = tables.get(table)
        if columns is None:
            problems.append(
                ContractProblem(
                    sink,
                    name,
                    f"sink {sink}: table {table} (field {name!r}) is not created by any "
                    "migration in consumers/migrations/: add a CREATE TABLE migration or fix "
                    f"the table in {_CONTRACTS_FILE}",
                )
            )
            break
        column_type = columns.get(mapping.name)
        if column_type is None:
            problems.append(
                ContractProblem(
                    sink,
                    name,
                    f"sink {sink}: field {name!r} maps to column {table}.{mapping.name}, which "
                    "no migration in consumers/migrations/ creates: add it in a new migration "
                    f"(ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {mapping.name} …)",
                )
            )
        elif isinstance(mapping, JsonColumn) and column_type not in ("json", "jsonb"):
            problems.append(
                ContractProblem(
                    sink,
                    name,
                    f"sink {sink}: field {name!r} maps to JSON column {table}.{mapping.name}, "
                    f"but that column is {column_type}: declare it Column(...) or make the "
                    "column jsonb",
                )
            )
    return problems
