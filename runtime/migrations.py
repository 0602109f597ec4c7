"""Versioned, idempotent SQL migrations.

Each package that owns tables ships numbered SQL files (``0001_outbox.sql``) in a
``migrations`` folder and registers it as a :class:`MigrationSource`. :func:`migrate`
applies the files not yet recorded in ``sidestream_migrations``, each in its own
transaction, under an advisory lock so concurrent workers starting at once do not race.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from runtime.errors import SidestreamError

logger = logging.getLogger(__name__)

_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
# Any constant works, as long as every Sidestream process uses the same one.
_ADVISORY_LOCK_ID = 0x5D35_7EA3


class MigrationError(SidestreamError):
    """A migration file is malformed, was edited after being applied, or failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    source: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationSource:
    """The ``migrations`` folder of one package, e.g. ``MigrationSource("producers")``."""

    package: str
    folder: str = "migrations"

    def load(self) -> list[Migration]:
        found = []
        root = resources.files(self.package).joinpath(self.folder)
        for entry in sorted(root.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            match = _FILENAME.match(entry.name)
            if match is None:
                raise MigrationError(
                    f"{self.package}/{self.folder}/{entry.name}: expected NNNN_name.sql"
                )
            found.append(
                Migration(self.package, int(match["version"]), match["name"], entry.read_text())
            )
        return found


def migrate(
    conn: psycopg.Connection[Any], sources: Sequence[MigrationSource], *, schema: str = "public"
) -> list[Migration]:
    """Apply pending migrations of ``sources`` into ``schema``; returns those applied.

    The connection must be in autocommit mode; each migration runs in its own transaction
    with ``search_path`` set to ``schema`` so the same files can build a shadow schema.
    """
    if not conn.autocommit:
        raise MigrationError("migrate() needs an autocommit connection")
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.sidestream_migrations ("
            " source text NOT NULL, version int NOT NULL, name text NOT NULL,"
            " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (source, version))"
        ).format(ident)
    )
    applied: list[Migration] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_ID,))
    try:
        done = {
            (row[0], row[1]): row[2]
            for row in conn.execute(
                sql.SQL("SELECT source, version, checksum FROM {}.sidestream_migrations").format(
                    ident
                )
            )
        }
        for source in sources:
            for migration in source.load():
                key = (migration.source, migration.version)
                if key in done:
                    if done[key] != migration.checksum:
                        raise MigrationError(
                            f"{migration.source} migration {migration.version:04d}_"
                            f"{migration.name} changed after it was applied; add a new "
                            "migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
                    try:
                        conn.execute(migration.sql.encode())
                    except psycopg.Error as exc:
                        raise MigrationError(
                            f"{migration.source} {migration.version:04d}_{migration.name}: {exc}"
                        ) from exc
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.sidestream_migrations (source, version, name, checksum)"
                            " VALUES (%s, %s, %s, %s)"
                        ).format(ident),
                        (migration.source, migration.version, migration.name, migration.checksum),
                    )
                logger.debug(
                    "applied %s migration %04d_%s to schema %s",
                    migration.source,
                    migration.version,
                    migration.name,
                    schema,
                )
                applied.append(migration)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_ID,))
    if applied:
        # One line per call: benchmarks, chaos runs and tests migrate many scratch schemas.
        logger.info(
            "applied %d migration(s) to schema %s: %s",
            len(applied),
            schema,
            ", ".join(f"{m.source} {m.version:04d}" for m in applied),
        )
    return applied
