"""Schema ↔ table contracts: every field of every version is stored or deliberately not."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from consumers.sinks.contracts import (
    CONTRACTS,
    NO_TABLE,
    Column,
    JsonColumn,
    NotStored,
    SinkContract,
    check_contracts,
    migrated_tables,
)
from runtime.migrations import Migration
from schemas import AVRO_DIR


@pytest.fixture
def root(tmp_path: Path) -> Path:
    copy = tmp_path / "avro"
    shutil.copytree(AVRO_DIR, copy)
    return copy


def _add_audit_v2(root: Path, field: dict[str, Any]) -> None:
    schema = json.loads((root / "audit_event" / "v1.avsc").read_text())
    schema["fields"].append(field)
    (root / "audit_event" / "v2.avsc").write_text(json.dumps(schema))


SEVERITY = {"name": "severity", "type": ["null", "string"], "default": None}


def _with_audit_field(name: str, mapping: Column | JsonColumn | NotStored) -> list[SinkContract]:
    return [
        dataclasses.replace(c, fields={**c.fields, name: mapping}) if c.sink == "audit" else c
        for c in CONTRACTS
    ]


def _migration(sql: str, version: int = 9999) -> Migration:
    return Migration("consumers", version, "test", sql)


def _repo_migrations() -> list[Migration]:
    from consumers import CONSUMER_MIGRATIONS

    return CONSUMER_MIGRATIONS.load()


def test_the_repositorys_sinks_keep_their_contracts() -> None:
    assert check_contracts() == []


def test_a_field_added_in_a_new_version_fails_until_mapped_or_ignored(root: Path) -> None:
    _add_audit_v2(root, SEVERITY)
    [problem] = check_contracts(root)
    assert (problem.sink, problem.field) == ("audit", "severity")
    assert "audit_event v2" in problem.message
    assert "consumers/sinks/contracts.py" in problem.message
    assert "NotStored(reason)" in problem.message

    ignored = _with_audit_field("severity", NotStored("derived from outcome downstream"))
    assert check_contracts(root, contracts=ignored) == []


def test_a_mapped_column_must_exist_in_the_migrations(root: Path) -> None:
    _add_audit_v2(root, SEVERITY)
    mapped = _with_audit_field("severity", Column("severity"))
    [problem] = check_contracts(root, contracts=mapped)
    assert (problem.sink, problem.field) == ("audit", "severity")
    assert "audit_events.severity" in problem.message
    assert "ALTER TABLE audit_events ADD COLUMN" in problem.message

    migrations = [
        *_repo_migrations(),
        _migration("ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS severity text;"),
    ]
    assert check_contracts(root, contracts=mapped, migrations=migrations) == []


def test_a_json_mapping_needs_a_json_column(root: Path) -> None:
    _add_audit_v2(root, SEVERITY)
    mapped = _with_audit_field("severity", JsonColumn("action"))
    [problem] = check_contracts(root, contracts=mapped)
    assert "JSON column audit_events.action" in problem.message
    assert "text" in problem.message


def test_a_declared_field_no_version_has_is_flagged() -> None:
    typo = _with_audit_field("ip_address", Column("ip"))
    [problem] = check_contracts(contracts=typo)
    assert (problem.sink, problem.field) == ("audit", "ip_address")
    assert "a typo?" in problem.message


def test_every_sink_and_every_subject_needs_a_contract() -> None:
    without_audit = [c for c in CONTRACTS if c.sink != "audit"]
    problems = check_contracts(contracts=without_audit)
    messages = " | ".join(p.message for p in problems)
    assert "sink audit: no contract for its subject audit_event" in messages
    assert "subject audit_event: no sink contract and not in NO_TABLE" in messages

    no_table = {k: v for k, v in NO_TABLE.items() if k != "entity_changed"}
    [problem] = check_contracts(no_table=no_table)
    assert "subject entity_changed" in problem.message


def test_not_stored_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        NotStored(" ")


def test_the_migration_reader_follows_alter_rename_and_drop() -> None:
    tables = migrated_tables(
        [
            _migration("CREATE TABLE t (a int, b text, c jsonb) PARTITION BY RANGE (a);", 1),
            _migration(
                "CREATE TABLE t_default PARTITION OF t DEFAULT;"
                "ALTER TABLE t ADD COLUMN IF NOT EXISTS d timestamptz, DROP COLUMN b;"
                "ALTER TABLE t RENAME COLUMN c TO e;"
                "ALTER TABLE t ALTER COLUMN a TYPE bigint;"
                "CREATE TABLE gone (x int); DROP TABLE IF EXISTS gone;"
                "ALTER TABLE t RENAME TO u;",
                2,
            ),
        ]
    )
    assert tables == {"u": {"a": "int8", "e": "jsonb", "d": "timestamptz"}}


def test_a_migration_that_does_not_parse_is_named() -> None:
    with pytest.raises(ValueError, match=r"0007_test\.sql does not parse"):
        migrated_tables([_migration("CREATE TABLE (", 7)])


def test_the_migration_reader_agrees_with_postgres(
    pg_conn: psycopg.Connection[Any], sink_schema: str
) -> None:
    """What pglast reads from the files is what Postgres builds from them."""
    rows = pg_conn.execute(
        "SELECT c.table_name, c.column_name, c.udt_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_schema, table_name)"
        " WHERE c.table_schema = %s AND t.table_type = 'BASE TABLE'"
        " AND c.table_name NOT LIKE '%%\\_20__\\_%%' AND c.table_name NOT LIKE '%%\\_default'"
        " AND c.table_name <> 'sidestream_migrations'",
        (sink_schema,),
    ).fetchall()
    in_postgres: dict[str, dict[str, str]] = {}
    for table, column, udt in rows:
        in_postgres.setdefault(table, {})[column] = udt
    assert in_postgres["notifications"]["destination"] == "text"  # added by an ALTER TABLE
    assert migrated_tables(_repo_migrations()) == in_postgres
