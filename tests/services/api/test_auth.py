"""Authentication and tenancy against the real Postgres (keys) and Redis (rate limits):
401 without a valid credential, 403 for another tenant or a missing scope, the audit
actor from the credential."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi import APIRouter

from runtime import Settings
from schemas import AuditEvent
from services.api import ApiConfig, Scope, create_app, require_scope, tenant_router
from services.api.auth import check_tenant_routes
from services.api.keys import hash_secret, parse_key
from tests.services.api.conftest import RunningApi, running_api
from tests.services.api.test_projects import decoded_outbox

NO_AUTH = {"Authorization": ""}  # TenantAuth removes it: the request goes out bare


def tenant_operations(api: RunningApi, tenant: str) -> list[tuple[str, str]]:
    """(method, path) of every tenant route in the OpenAPI document, with its path
    parameters filled in: routes added later are covered without editing this test."""
    document = api.app.openapi()
    found = []
    for template, operations in document["paths"].items():
        if not template.startswith("/v1/tenants/{tenant}"):
            continue
        path = template.replace("{tenant}", tenant)
        path = path.replace("{project_id}", str(uuid.uuid4()))
        for method in operations:
            found.append((method.upper(), path))
    return found


async def _call(api: RunningApi, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {"name": "x"} if method in ("POST", "PUT", "PATCH") else None
    return await api.client.request(method, path, json=body, headers=headers)


def test_every_tenant_route_needs_a_credential_of_its_tenant(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            operations = tenant_operations(api, "acme")
            assert len(operations) >= 7
            other_tenant = api.keys.key("globex", "admin").token
            for method, path in operations:
                bare = await _call(api, method, path, NO_AUTH)
                assert bare.status_code == 401, (method, path, bare.text)
                assert bare.headers["WWW-Authenticate"] == 'Bearer realm="sidestream"'
                assert bare.headers["content-type"] == "application/problem+json"
                garbage = await _call(api, method, path, {"Authorization": "Bearer nope"})
                assert garbage.status_code == 401
                assert 'error="invalid_token"' in garbage.headers["WWW-Authenticate"]
                basic = await _call(api, method, path, {"Authorization": "Basic dXNlcjpwdw=="})
                assert basic.status_code == 401
                foreign = await _call(
                    api, method, path, {"Authorization": f"Bearer {other_tenant}"}
                )
                assert foreign.status_code == 403, (method, path, foreign.text)
                assert foreign.json()["status"] == 403

    asyncio.run(body())


def test_a_wrong_secret_a_revoked_key_and_an_expired_key_are_401(
    stack_settings: Settings, api_config: ApiConfig, pg_conn: psycopg.Connection[Any]
) -> None:
    # No key cache: a revocation shows at once (the cache's bound is tested below).
    settings = stack_settings.with_overrides(api_key_cache_ttl_s=0)
    schema = api_config.schema
    path = "/v1/tenants/acme/projects"

    async def body() -> None:
        async with running_api(settings, api_config) as api:
            key = api.keys.key("acme", "read")
            auth = {"Authorization": f"Bearer {key.token}"}
            assert (await api.client.get(path, headers=auth)).status_code == 200

            key_id, secret = parse_key(key.token) or ("", "")
            forged = f"ssk_{key_id}_{secret[::-1]}"
            wrong = await api.client.get(path, headers={"Authorization": f"Bearer {forged}"})
            assert wrong.status_code == 401
            assert wrong.json()["detail"] == "invalid API key"

            api.keys.revoke(key.record.key_id)
            revoked = await api.client.get(path, headers=auth)
            assert revoked.status_code == 401
            assert revoked.json()["detail"] == "the API key is revoked"
            assert 'error="invalid_token"' in revoked.headers["WWW-Authenticate"]

            expiring = api.keys.key(
                "acme", "read", expires_at=datetime.now(UTC) + timedelta(days=1)
            )
            pg_conn.execute(
                f"UPDATE \"{schema}\".api_keys SET expires_at = now() - interval '1 second'"
                " WHERE key_id = %s",
                (expiring.record.key_id,),
            )
            expired = await api.client.get(
                path, headers={"Authorization": f"Bearer {expiring.token}"}
            )
            assert expired.status_code == 401
            assert expired.json()["detail"] == "the API key is expired"

    asyncio.run(body())


def test_a_cached_key_is_revoked_once_its_cache_entry_expires(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    settings = stack_settings.with_overrides(api_key_cache_ttl_s=300)
    path = "/v1/tenants/acme/projects"

    async def body() -> None:
        async with running_api(settings, api_config) as api:
            key = api.keys.key("acme", "read")
            auth = {"Authorization": f"Bearer {key.token}"}
            assert (await api.client.get(path, headers=auth)).status_code == 200
            api.keys.revoke(key.record.key_id)
            # Within the cache's lifetime the process has not looked again (the bound a
            # revocation takes is SIDESTREAM_API_KEY_CACHE_TTL_S)...
            assert (await api.client.get(path, headers=auth)).status_code == 200
            # ...and once the entry is gone, it has.
            authenticator = api.resources.authenticator
            assert authenticator is not None
            authenticator.keys.clear_cache()
            assert (await api.client.get(path, headers=auth)).status_code == 401

    asyncio.run(body())


def test_scopes_read_write_notify(stack_settings: Settings, api_config: ApiConfig) -> None:
    base = "/v1/tenants/acme"
    notification = {"channel": "EMAIL", "recipient": "a@b.example", "template": "welcome"}

    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:

            def auth(*scopes: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {api.keys.key('acme', *scopes).token}"}

            reader, writer, notifier = auth("read"), auth("write"), auth("notify")
            assert (await api.client.get(f"{base}/projects", headers=reader)).status_code == 200
            denied = await api.client.post(
                f"{base}/projects", json={"name": "nope"}, headers=reader
            )
            assert denied.status_code == 403
            assert denied.headers["WWW-Authenticate"] == (
                'Bearer realm="sidestream", error="insufficient_scope", scope="write"'
            )
            created = await api.client.post(
                f"{base}/projects", json={"name": "yes"}, headers=writer
            )
            assert created.status_code == 201
            pid = created.json()["id"]
            # write includes read
            assert (
                await api.client.get(f"{base}/projects/{pid}", headers=writer)
            ).status_code == 200
            for method in ("PATCH", "PUT"):
                response = await api.client.request(
                    method, f"{base}/projects/{pid}", json={"name": "x"}, headers=reader
                )
                assert response.status_code == 403
            gone = await api.client.delete(f"{base}/projects/{pid}", headers=reader)
            assert gone.status_code == 403
            # notify is its own scope
            assert (
                await api.client.post(f"{base}/notifications", json=notification, headers=writer)
            ).status_code == 403
            assert (await api.client.get(f"{base}/projects", headers=notifier)).status_code == 403
            assert (
                await api.client.post(f"{base}/notifications", json=notification, headers=notifier)
            ).status_code == 202

    asyncio.run(body())


def test_the_audit_actor_is_the_credential(
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    base = "/v1/tenants/acme/projects"

    async def body() -> tuple[str, str]:
        async with running_api(stack_settings, api_config) as api:
            plain = api.keys.key("acme", "write")
            service = api.keys.key("acme", "write", "act-as")
            # A key without act-as cannot put words in someone else's mouth; one with it
            # names the user it acts for.
            for name, key, actor in (
                ("one", plain, "ceo@victim.example"),
                ("two", service, "user-42"),
            ):
                created = await api.client.post(
                    base,
                    json={"name": name},
                    headers={"Authorization": f"Bearer {key.token}", "X-Actor-ID": actor},
                )
                assert created.status_code == 201
            return plain.record.label, service.record.label

    plain_label, service_label = asyncio.run(body())
    audits = [e for e in decoded_outbox(pg_conn, api_schema) if isinstance(e, AuditEvent)]
    first, second = audits
    assert isinstance(first, AuditEvent)
    assert isinstance(second, AuditEvent)
    assert first.actor_id == plain_label
    assert first.details["principal"] == plain_label
    assert second.actor_id == "user-42"
    assert second.details["principal"] == service_label


def test_without_authentication_configured_everything_is_the_anonymous_tenant(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    settings = stack_settings.with_overrides(api_auth="none")

    async def body() -> None:
        async with running_api(settings, api_config) as api:
            created = await api.client.post(
                "/v1/tenants/open/projects", json={"name": "local only"}
            )
            assert created.status_code == 201

    asyncio.run(body())


def test_a_tenant_route_mounted_without_authentication_is_refused(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    app = create_app(stack_settings, config=api_config)
    check_tenant_routes(app)  # the app as built passes
    open_router = APIRouter(prefix="/v1/tenants/{tenant}/webhook-endpoints")

    @open_router.get("")
    async def listing() -> list[str]:
        return []

    app.include_router(open_router)
    with pytest.raises(RuntimeError, match="not authenticated"):
        check_tenant_routes(app)

    unscoped = tenant_router("/things", tags=["things"])

    @unscoped.get("")
    async def things() -> list[str]:
        return []

    scoped = tenant_router("/admin-things", tags=["things"])

    @scoped.get("", dependencies=[require_scope(Scope.ADMIN)])
    async def admin_things() -> list[str]:
        return []

    fresh = create_app(stack_settings, config=dataclasses.replace(api_config))
    fresh.include_router(scoped)
    check_tenant_routes(fresh)
    fresh.include_router(unscoped)
    with pytest.raises(RuntimeError, match="states no scope"):
        check_tenant_routes(fresh)


def test_keys_are_stored_as_keyed_hashes_only(
    stack_settings: Settings, api_config: ApiConfig, pg_conn: psycopg.Connection[Any]
) -> None:
    async def body() -> str:
        async with running_api(stack_settings, api_config) as api:
            return api.keys.key("acme", "read").token

    token = asyncio.run(body())
    key_id, secret = parse_key(token) or ("", "")
    row = pg_conn.execute(
        f'SELECT secret_hash FROM "{api_config.schema}".api_keys WHERE key_id = %s', (key_id,)
    ).fetchone()
    assert row is not None
    stored = bytes(row[0])
    assert secret.encode() not in stored
    hash_key = stack_settings.api_key_hash_secret.get_secret_value().encode()
    assert stored == hash_secret(hash_key, secret)
    assert stored != hash_secret(b"another server secret", secret)


def test_docs_and_the_openapi_document_can_be_turned_off(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    assert stack_settings.with_overrides(profile="production").api_docs_enabled is False
    assert stack_settings.with_overrides(profile="production", api_docs=True).api_docs_enabled

    async def body() -> None:
        async with running_api(stack_settings.with_overrides(api_docs=False), api_config) as api:
            assert (await api.client.get("/openapi.json")).status_code == 404
            assert (await api.client.get("/docs")).status_code == 404
            assert api.app.openapi()["paths"]  # still available to `sidestream api openapi`
        async with running_api(stack_settings, api_config) as api:
            assert (await api.client.get("/openapi.json")).status_code == 200

    asyncio.run(body())
