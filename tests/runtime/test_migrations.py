from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from runtime.migrations import MigrationError, MigrationSource, migrate


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unique: Any) -> tuple[str, Path]:
    name = unique("migpkg")
    root = tmp_path / name
    (root / "migrations").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "migrations" / "0001_things.sql").write_text(
        "CREATE TABLE things (id int PRIMARY KEY);\nINSERT INTO things VALUES (1), (2);"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, root / "migrations"


def _count(conn: psycopg.Connection[Any], schema: str) -> Any:
    query = sql.SQL("SELECT count(*) FROM {}.things").format(sql.Identifier(schema))
    return conn.execute(query).fetchone()


def test_applies_once_and_is_idempotent(
    pg_conn: psycopg.Connection[Any], pg_schema: str, package: tuple[str, Path]
) -> None:
    source = MigrationSource(package[0])
    first = migrate(pg_conn, [source], schema=pg_schema)
    assert [(m.version, m.name) for m in first] == [(1, "things")]
    assert migrate(pg_conn, [source], schema=pg_schema) == []
    assert _count(pg_conn, pg_schema) == (2,)


def test_new_files_apply_in_order(
    pg_conn: psycopg.Connection[Any], pg_schema: str, package: tuple[str, Path]
) -> None:
    name, folder = package
    migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)
    (folder / "0002_more.sql").write_text("INSERT INTO things VALUES (3);")
    applied = migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)
    assert [m.version for m in applied] == [2]
    assert _count(pg_conn, pg_schema) == (3,)


def test_an_edited_applied_migration_is_refused(
    pg_conn: psycopg.Connection[Any], pg_schema: str, package: tuple[str, Path]
) -> None:
    name, folder = package
    migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)
    (folder / "0001_things.sql").write_text("CREATE TABLE things (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)


def test_a_failing_migration_leaves_nothing_half_applied(
    pg_conn: psycopg.Connection[Any], pg_schema: str, package: tuple[str, Path]
) -> None:
    name, folder = package
    (folder / "0002_broken.sql").write_text("INSERT INTO things VALUES (9); SELECT nonsense();")
    with pytest.raises(MigrationError, match="0002_broken"):
        migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)
    assert _count(pg_conn, pg_schema) == (2,)  # 0001 stays, 0002's insert rolled back


def test_bad_file_names_are_rejected(
    pg_conn: psycopg.Connection[Any], pg_schema: str, package: tuple[str, Path]
) -> None:
    name, folder = package
    (folder / "2_oops.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"expected NNNN_name\.sql"):
        migrate(pg_conn, [MigrationSource(name)], schema=pg_schema)
