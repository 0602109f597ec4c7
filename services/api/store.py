"""Projects in Postgres: the SQL of the reference API, and the JSON a row becomes.

Every method takes the connection (and so the transaction) from the caller: the route
decides what shares a transaction (the row and its outbox events) and which pool serves
a read (the replica, for cache loads). Writes bump ``version`` by one, deletion included
(deletion is soft: see ``services/migrations/0001_projects.sql``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from runtime.times import utc_text
from services.errors import ServicesError

__all__ = ["ProjectRow", "ProjectStore", "VersionMismatchError"]

_COLUMNS = "id, name, description, status, version, created_at, updated_at, deleted_at"
_CHANGEABLE = ("name", "description", "status")


class VersionMismatchError(ServicesError):
    """The project is not at the version the caller expected (``If-Match``).

    Attributes:
        current_version: its current version.
    """

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the project is at version {current_version}")
        self.current_version = current_version


@dataclass(frozen=True, slots=True)
class ProjectRow:
    """One row of ``projects`` (``deleted_at`` set: a soft-deleted project)."""

    id: UUID
    name: str
    description: str
    status: str
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None

    @classmethod
    def from_tuple(cls, row: tuple[Any, ...]) -> ProjectRow:
        return cls(*row)

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def document(self) -> dict[str, Any]:
        """The API representation (``services.api.models.Project``) as plain JSON."""
        return {
            "id": str(self.id),
            "name": self.name,
            "description": self.description,
            "status": self.status,
            "version": self.version,
            "created_at": utc_text(self.created_at),
            "updated_at": utc_text(self.updated_at),
        }

    def body(self) -> bytes:
        """:meth:`document` encoded: what responses send and the cache stores."""
        return json.dumps(self.document(), separators=(",", ":"), ensure_ascii=False).encode()


class ProjectStore:
    """Reads and writes ``projects`` (found on the connection's search path)."""

    async def get(
        self, conn: psycopg.AsyncConnection[Any], tenant: str, project_id: UUID
    ) -> ProjectRow | None:
        """The project, deleted or not; ``None`` when it never existed."""
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM projects WHERE tenant_id = %s AND id = %s",
            (tenant, project_id),
        )
        row = await cursor.fetchone()
        return None if row is None else ProjectRow.from_tuple(row)

    async def page(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        *,
        after: UUID | None,
        limit: int,
    ) -> list[ProjectRow]:
        """Up to ``limit`` live projects with an id above ``after``, in id order (an index
        range scan on ``projects_live_by_id``)."""
        if after is None:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM projects WHERE tenant_id = %s AND deleted_at IS NULL"
                " ORDER BY id LIMIT %s",
                (tenant, limit),
            )
        else:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM projects WHERE tenant_id = %s AND deleted_at IS NULL"
                " AND id > %s ORDER BY id LIMIT %s",
                (tenant, after, limit),
            )
        return [ProjectRow.from_tuple(row) for row in await cursor.fetchall()]

    async def create(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        project_id: UUID,
        fields: Mapping[str, Any],
    ) -> ProjectRow:
        """Insert a project at version 1.

        Raises:
            psycopg.errors.UniqueViolation: a live project of the tenant has this name.
        """
        cursor = await conn.execute(
            "INSERT INTO projects (tenant_id, id, name, description, status)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (tenant, project_id, fields["name"], fields["description"], fields["status"]),
        )
        row = await cursor.fetchone()
        assert row is not None  # INSERT ... RETURNING returns the row
        return ProjectRow.from_tuple(row)

    async def update(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        project_id: UUID,
        changes: Mapping[str, Any],
        *,
        expected_version: int | None,
    ) -> ProjectRow | None:
        """Apply ``changes`` to a live project and bump its version; ``None`` if there is
        no live project. The row lock taken here orders concurrent writers of one project,
        so their outbox events are in commit order too.

        Raises:
            VersionMismatchError: ``expected_version`` is not the current version.
            psycopg.errors.UniqueViolation: the new name clashes.
        """
        unknown = set(changes) - set(_CHANGEABLE)
        if unknown or not changes:
            raise ValueError(f"cannot change {sorted(unknown) or 'nothing'}")
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in changes
        )
        return await self._bump(
            conn,
            tenant,
            project_id,
            assignments,
            dict(changes),
            expected_version=expected_version,
        )

    async def delete(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        project_id: UUID,
        *,
        expected_version: int | None,
    ) -> ProjectRow | None:
        """Soft-delete a live project (its version is bumped); ``None`` if there is none.

        Raises:
            VersionMismatchError: ``expected_version`` is not the current version.
        """
        return await self._bump(
            conn,
            tenant,
            project_id,
            sql.SQL("deleted_at = now()"),
            {},
            expected_version=expected_version,
        )

    async def _bump(
        self,
        conn: psycopg.AsyncConnection[Any],
        tenant: str,
        project_id: UUID,
        assignments: sql.Composable,
        params: dict[str, Any],
        *,
        expected_version: int | None,
    ) -> ProjectRow | None:
        query = sql.SQL(
            "UPDATE projects SET {}, version = version + 1, updated_at = now()"
            " WHERE tenant_id = %(tenant)s AND id = %(id)s AND deleted_at IS NULL"
            " AND (%(expected)s::bigint IS NULL OR version = %(expected)s::bigint)"
            " RETURNING {}"
        ).format(assignments, sql.SQL(_COLUMNS))
        cursor = await conn.execute(
            query, {**params, "tenant": tenant, "id": project_id, "expected": expected_version}
        )
        row = await cursor.fetchone()
        if row is not None:
            return ProjectRow.from_tuple(row)
        if expected_version is None:
            return None
        # Nothing updated: tell "no such live project" from "not at that version".
        current = await self.get(conn, tenant, project_id)
        if current is None or current.deleted:
            return None
        raise VersionMismatchError(current.version)
