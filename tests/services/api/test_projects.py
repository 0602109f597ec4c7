"""Projects CRUD against the real Postgres, Redis and (for events) Kafka topics: every
write leaves its AuditEvent + EntityChanged in the outbox, in the same transaction."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg

from runtime import Settings
from schemas import AuditEvent, EntityChanged, EventDeserializer
from services.api import ApiConfig
from tests.services.api.conftest import outbox_rows, running_api


def decoded_outbox(conn: psycopg.Connection[Any], schema: str) -> list[Any]:
    deserializer = EventDeserializer()
    rows = conn.execute(f'SELECT topic, value FROM "{schema}".outbox ORDER BY id').fetchall()
    return [deserializer.deserialize(bytes(value), topic) for topic, value in rows]


def test_crud_writes_outbox_events_in_the_same_transaction(
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    base = "/v1/tenants/acme/projects"

    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            created = await api.client.post(
                base,
                json={"name": "Apollo", "description": "moon"},
                headers={"X-Request-ID": "req-create-1", "X-Actor-ID": "u-7"},
            )
            assert created.status_code == 201, created.text
            project = created.json()
            pid = project["id"]
            assert project["version"] == 1
            assert project["status"] == "active"
            assert created.headers["ETag"] == '"1"'
            assert created.headers["Location"] == f"{base}/{pid}"
            assert created.headers["X-Request-ID"] == "req-create-1"
            assert uuid.UUID(pid).version == 7

            got = await api.client.get(f"{base}/{pid}")
            assert got.status_code == 200
            assert got.json() == project

            patched = await api.client.patch(f"{base}/{pid}", json={"description": "mars"})
            assert patched.status_code == 200, patched.text
            assert patched.json()["version"] == 2
            assert patched.json()["description"] == "mars"
            assert patched.json()["name"] == "Apollo"

            replaced = await api.client.put(
                f"{base}/{pid}", json={"name": "Artemis", "status": "archived"}
            )
            assert replaced.json()["version"] == 3
            assert replaced.json()["description"] == ""  # PUT replaces: omitted = default

            # Read-your-writes: the write invalidated the cached version 1.
            again = await api.client.get(f"{base}/{pid}")
            assert again.json()["version"] == 3
            assert again.json()["name"] == "Artemis"

            deleted = await api.client.delete(f"{base}/{pid}")
            assert deleted.status_code == 204
            gone = await api.client.get(f"{base}/{pid}")
            assert gone.status_code == 404
            assert gone.headers["content-type"] == "application/problem+json"
            assert (await api.client.delete(f"{base}/{pid}")).status_code == 404

    asyncio.run(body())

    events = decoded_outbox(pg_conn, api_schema)
    kinds = [
        (type(e).__name__, getattr(e, "action", getattr(e, "change_kind", None))) for e in events
    ]
    assert kinds == [
        ("AuditEvent", "project.create"),
        ("EntityChanged", "CREATED"),
        ("AuditEvent", "project.update"),
        ("EntityChanged", "UPDATED"),
        ("AuditEvent", "project.update"),
        ("EntityChanged", "UPDATED"),
        ("AuditEvent", "project.delete"),
        ("EntityChanged", "DELETED"),
    ]
    changes = [e for e in events if isinstance(e, EntityChanged)]
    assert [e.version for e in changes] == [1, 2, 3, 4]
    assert {e.entity_id for e in changes} == {events[0].resource_id}
    audits = [e for e in events if isinstance(e, AuditEvent)]
    # The admin key may act for an end user (X-Actor-ID); the event records both.
    assert audits[0].actor_id == "u-7"
    assert audits[0].details["principal"].startswith("apikey:")
    assert audits[1].actor_id == audits[0].details["principal"]
    assert audits[0].details["request_id"] == "req-create-1"
    assert audits[0].ip == "10.1.2.3"
    rows = outbox_rows(pg_conn, api_schema)
    assert rows[0][1] == api_config.topics["audit_event"]
    assert rows[1][1] == api_config.topics["entity_changed"]
    assert bytes(rows[1][2]) == f"acme:project:{changes[0].entity_id}".encode()
    assert all(names == ["x-request-id"] for _, _, _, names in rows)


def test_a_failed_write_leaves_nothing_in_the_outbox(
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    base = "/v1/tenants/acme/projects"

    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            first = await api.client.post(base, json={"name": "Twin"})
            assert first.status_code == 201
            pid = first.json()["id"]
            other = await api.client.post(base, json={"name": "Other"})
            # Unique-name violations roll the transaction back: 409, no events.
            clash = await api.client.post(base, json={"name": "twin"})
            assert clash.status_code == 409, clash.text
            assert clash.json()["status"] == 409
            assert clash.json()["request_id"]
            rename = await api.client.patch(f"{base}/{other.json()['id']}", json={"name": "TWIN"})
            assert rename.status_code == 409
            # A stale If-Match: 412 with the current version; no events.
            stale = await api.client.patch(
                f"{base}/{pid}", json={"description": "x"}, headers={"If-Match": '"7"'}
            )
            assert stale.status_code == 412
            assert stale.headers["ETag"] == '"1"'
            fresh = await api.client.patch(
                f"{base}/{pid}", json={"description": "x"}, headers={"If-Match": '"1"'}
            )
            assert fresh.status_code == 200
            assert fresh.json()["version"] == 2
            missing = await api.client.put(f"{base}/{uuid.uuid4()}", json={"name": "Ghost"})
            assert missing.status_code == 404

    asyncio.run(body())
    events = decoded_outbox(pg_conn, api_schema)
    # Two creates and one successful patch: three writes, two events each.
    assert len(events) == 6
    assert [type(e).__name__ for e in events[1::2]] == ["EntityChanged"] * 3


def test_validation_errors_are_422_problems(
    stack_settings: Settings,
    api_config: ApiConfig,
    api_schema: str,
    pg_conn: psycopg.Connection[Any],
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            base = "/v1/tenants/acme/projects"
            cases = [
                api.client.post(base, json={"name": ""}),
                api.client.post(base, json={"name": "x", "colour": "red"}),
                api.client.post(base, json={"name": "x", "status": "gone"}),
                api.client.patch(f"{base}/{uuid.uuid4()}", json={}),
                api.client.get(f"{base}/not-a-uuid"),
                api.client.get(base, params={"limit": 0}),
                api.client.get(base, params={"cursor": "%%%"}),
                api.client.get("/v1/tenants/bad:tenant/projects"),
            ]
            for response in await asyncio.gather(*cases):
                assert response.status_code == 422, response.text
                problem = response.json()
                assert problem["status"] == 422
                assert problem["errors"]
                assert response.headers["content-type"] == "application/problem+json"

    asyncio.run(body())
    assert outbox_rows(pg_conn, api_schema) == []


def test_lists_page_by_cursor_and_see_writes(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    base = "/v1/tenants/pager/projects"

    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            ids = []
            for n in range(7):
                response = await api.client.post(base, json={"name": f"p{n}"})
                ids.append(response.json()["id"])
            seen: list[str] = []
            cursor = None
            pages = 0
            while True:
                params: dict[str, Any] = {"limit": 3}
                if cursor:
                    params["cursor"] = cursor
                page = (await api.client.get(base, params=params)).json()
                seen += [item["id"] for item in page["items"]]
                pages += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == ids
            assert pages == 3
            # Cached now; a write bumps the generation, so the next read sees it.
            await api.client.patch(f"{base}/{ids[0]}", json={"name": "renamed"})
            await api.client.delete(f"{base}/{ids[1]}")
            first = (await api.client.get(base, params={"limit": 3})).json()
            assert [i["id"] for i in first["items"]] == [ids[0], ids[2], ids[3]]
            assert first["items"][0]["name"] == "renamed"
            assert first["items"][0]["version"] == 2
            # A list item is exactly what reading the project returns.
            for item in first["items"]:
                assert (await api.client.get(f"{base}/{item['id']}")).json() == item
            # Another tenant sees nothing of this one.
            other = (await api.client.get("/v1/tenants/someone-else/projects")).json()
            assert other == {"items": [], "next_cursor": None}

    asyncio.run(body())
