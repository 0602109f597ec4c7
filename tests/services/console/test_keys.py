"""The console signs in with the API's own keys: admin scope → operator, read →
read-only, a revoked or unknown key → nobody (real Postgres, the API's key store)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from runtime import Settings
from runtime.migrations import migrate
from services import MIGRATION_SOURCES
from services.api.keys import create_key, create_tenant, revoke_key
from services.console import Role
from services.console.keys import ApiKeyVerifier


def test_api_keys_sign_in_with_the_role_their_scopes_give(
    stack_settings: Settings, pg_conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    migrate(pg_conn, MIGRATION_SOURCES, schema=pg_schema)
    pg_conn.execute(f'SET search_path TO "{pg_schema}"')
    hash_key = stack_settings.api_key_hash_secret.get_secret_value().encode()
    create_tenant(pg_conn, "ops")
    admin = create_key(pg_conn, "ops", scopes=["admin"], hash_key=hash_key)
    reader = create_key(pg_conn, "ops", scopes=["read"], hash_key=hash_key)
    writer = create_key(pg_conn, "ops", scopes=["write"], hash_key=hash_key)
    revoked = create_key(pg_conn, "ops", scopes=["admin"], hash_key=hash_key)
    revoke_key(pg_conn, revoked.record.key_id)
    verifier = ApiKeyVerifier(stack_settings, schema=pg_schema)

    async def sign_in() -> list[Any]:
        try:
            return [
                await verifier.verify(key)
                for key in (admin.token, reader.token, writer.token, revoked.token, "ssk_nope")
            ]
        finally:
            await verifier.close()

    operator, read_only, writer_principal, gone, unknown = asyncio.run(sign_in())
    assert operator is not None
    assert (operator.role, operator.tenant) == (Role.OPERATOR, "ops")
    assert operator.name == f"apikey:{admin.record.key_id}"
    assert read_only is not None
    assert read_only.role == Role.READ_ONLY
    # write implies read in the API: a read-only console user, never an operator.
    assert writer_principal is not None
    assert writer_principal.role == Role.READ_ONLY
    assert gone is None
    assert unknown is None
