"""Webhook endpoints through the API: registration with the SSRF guard, the secret shown
once, rotation, update and delete with audit events; notifications that name an
endpoint; the email link allowlist."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from consumers.delivery import SecretBox
from consumers.delivery.endpoints import LOCAL_ENDPOINT_SECRETS_KEY
from runtime import Settings
from schemas import EventDeserializer, NotificationRequested
from services.api import ApiConfig
from tests.services.api.conftest import outbox_rows, read_messages, running_api

BASE = "/v1/tenants/acme/webhook-endpoints"
PUBLIC_URL = "https://93.184.215.14/hooks?token=abc"  # an address literal: no DNS needed

REFUSED = [
    "http://127.0.0.1:8080/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://localhost:9000/",  # a name that resolves to loopback (the system resolver)
    "http://localhost./",
    "gopher://93.184.215.14/",
    "http://user:pw@93.184.215.14/",
]


def test_registration_refuses_private_and_odd_targets_with_a_clear_422(
    stack_settings: Settings, api_config: ApiConfig, pg_conn: psycopg.Connection[Any]
) -> None:
    async def body() -> list[dict[str, Any]]:
        async with running_api(stack_settings, api_config) as api:
            answers = []
            for url in REFUSED:
                response = await api.client.post(BASE, json={"url": url})
                assert response.status_code == 422, (url, response.text)
                assert response.headers["content-type"] == "application/problem+json"
                answers.append(response.json())
            return answers

    problems = asyncio.run(body())
    for url, problem in zip(REFUSED, problems, strict=True):
        # A scheme other than http(s) is refused by the schema itself (its errors name
        # the field); everything else by the target guard, whose detail names it.
        by_schema = [e for e in problem.get("errors", []) if "url" in map(str, e.get("loc", []))]
        assert problem["detail"].startswith("url: ") or by_schema, (url, problem)
        assert "127.0.0.1" not in problem["detail"], problem  # the class, not the address
    assert "loopback" in problems[0]["detail"]
    assert "loopback" in problems[REFUSED.index("http://localhost:9000/")]["detail"]
    count = pg_conn.execute(
        f'SELECT count(*) FROM "{api_config.schema}".webhook_endpoints'
    ).fetchone()
    assert count == (0,)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://93.184.215.14/a\u0000b"},
        {"url": "https://93.184.215.14/a b"},
        {"url": "https://bücher.example/"},
        {"url": "https://93.184.215.14/", "description": "nul \u0000 here"},
        {"url": "https://93.184.215.14/", "event_types": ["no spaces allowed"]},
        {"url": "https://93.184.215.14/", "extra": 1},
        {"url": "https://[::1/"},
        {"url": "https://93.184.215.14:99999/"},
        {"url": "https://" + "a" * 70 + ".example/"},
    ],
)
def test_malformed_registrations_are_422_never_500(
    stack_settings: Settings, api_config: ApiConfig, body: dict[str, Any]
) -> None:
    async def call() -> int:
        async with running_api(stack_settings, api_config) as api:
            return (await api.client.post(BASE, json=body)).status_code

    assert asyncio.run(call()) == 422


def test_https_is_required_in_production(stack_settings: Settings, api_config: ApiConfig) -> None:
    async def body() -> int:
        production = stack_settings.with_overrides(
            profile="production", delivery_webhook_require_https=False
        )
        async with running_api(production, api_config) as api:
            response = await api.client.post(BASE, json={"url": "http://93.184.215.14/x"})
            assert "https" in response.json()["detail"]
            return response.status_code

    assert asyncio.run(body()) == 422


def test_the_secret_is_shown_once_stored_sealed_and_rotatable(
    stack_settings: Settings, api_config: ApiConfig, pg_conn: psycopg.Connection[Any]
) -> None:
    schema = api_config.schema
    assert schema is not None

    async def body() -> tuple[dict[str, Any], dict[str, Any], list[Any], dict[str, Any]]:
        async with running_api(stack_settings, api_config) as api:
            created = await api.client.post(
                BASE,
                json={"url": PUBLIC_URL, "description": "billing", "event_types": ["invoice_paid"]},
            )
            assert created.status_code == 201, created.text
            assert created.headers["cache-control"] == "no-store"
            endpoint = created.json()
            assert created.headers["location"] == f"{BASE}/{endpoint['id']}"
            read = (await api.client.get(f"{BASE}/{endpoint['id']}")).json()
            second = (await api.client.post(BASE, json={"url": PUBLIC_URL})).json()
            first_page = (await api.client.get(BASE, params={"limit": 1})).json()
            assert first_page["next_after"] == endpoint["id"]
            rest = await api.client.get(BASE, params={"after": first_page["next_after"]})
            assert [i["id"] for i in rest.json()["items"]] == [second["id"]]
            assert rest.json()["next_after"] is None
            listed = first_page["items"]
            rotated = await api.client.post(
                f"{BASE}/{endpoint['id']}/rotate-secret", json={"previous_secret_valid_s": 60}
            )
            assert rotated.status_code == 200, rotated.text
            return endpoint, read, listed, rotated.json()

    endpoint, read, listed, rotated = asyncio.run(body())
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    assert "secret" not in read
    assert [item["id"] for item in listed] == [endpoint["id"]]
    assert all("secret" not in item for item in listed)
    assert read["event_types"] == ["invoice_paid"]

    row = pg_conn.execute(
        f'SELECT secret_sealed, previous_secret_sealed FROM "{schema}".webhook_endpoints'
        " WHERE id = %s",
        (endpoint["id"],),
    ).fetchone()
    assert row is not None
    sealed, previous = bytes(row[0]), bytes(row[1])
    assert secret.encode() not in sealed
    box = SecretBox(LOCAL_ENDPOINT_SECRETS_KEY)
    endpoint_id = uuid.UUID(endpoint["id"])
    assert box.open(previous, tenant="acme", endpoint_id=endpoint_id) == secret
    assert box.open(sealed, tenant="acme", endpoint_id=endpoint_id) == rotated["secret"]
    assert rotated["secret"] != secret
    assert rotated["previous_secret_expires_at"] is not None

    # Every write is audited, and no audit row carries a secret or the query string.
    rows = outbox_rows(pg_conn, schema)
    assert [r[0] for r in rows] == ["audit_event"] * 3  # create, create, rotate
    payloads = pg_conn.execute(f'SELECT value FROM "{schema}".outbox').fetchall()
    for (value,) in payloads:
        assert secret.encode() not in bytes(value)
        assert rotated["secret"].encode() not in bytes(value)
        assert b"token=abc" not in bytes(value)


def test_update_vets_a_new_url_and_delete_removes_the_endpoint(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            endpoint = (await api.client.post(BASE, json={"url": PUBLIC_URL})).json()
            item = f"{BASE}/{endpoint['id']}"
            refused = await api.client.patch(item, json={"url": "http://169.254.169.254/"})
            assert refused.status_code == 422
            assert "link-local" in refused.json()["detail"]
            changed = await api.client.patch(item, json={"enabled": False, "description": "x"})
            assert changed.status_code == 200
            assert (changed.json()["enabled"], changed.json()["version"]) == (False, 2)
            assert (await api.client.patch(item, json={})).status_code == 422
            assert (await api.client.delete(item)).status_code == 204
            assert (await api.client.get(item)).status_code == 404
            assert (await api.client.delete(item)).status_code == 404
            other = await api.client.get(f"/v1/tenants/globex/webhook-endpoints/{endpoint['id']}")
            assert other.status_code == 404

    asyncio.run(body())


def test_with_private_targets_allowed_a_local_endpoint_registers(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> int:
        local = stack_settings.with_overrides(delivery_allow_private_targets=True)
        async with running_api(local, api_config) as api:
            response = await api.client.post(BASE, json={"url": "http://127.0.0.1:9/hook"})
            return response.status_code

    assert asyncio.run(body()) == 201


def test_notifications_name_an_endpoint_of_the_tenant_that_accepts_the_template(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    url = "/v1/tenants/acme/notifications"

    async def body() -> str:
        async with running_api(stack_settings, api_config) as api:
            endpoint = (
                await api.client.post(
                    BASE, json={"url": PUBLIC_URL, "event_types": ["invoice_paid"]}
                )
            ).json()
            foreign = (
                await api.client.post(
                    "/v1/tenants/globex/webhook-endpoints", json={"url": PUBLIC_URL}
                )
            ).json()

            async def notify(**fields: Any) -> Any:
                request = {"channel": "WEBHOOK", "template": "invoice_paid", **fields}
                return await api.client.post(url, json=request)

            ok = await notify(endpoint_id=endpoint["id"])
            assert ok.status_code == 202, ok.text
            unknown = await notify(endpoint_id=foreign["id"])  # another tenant's endpoint
            assert unknown.status_code == 422
            assert "no webhook endpoint" in unknown.json()["detail"]
            wrong_type = await notify(endpoint_id=endpoint["id"], template="welcome")
            assert wrong_type.status_code == 422
            assert "does not accept 'welcome'" in wrong_type.json()["detail"]
            raw_url = await notify(recipient="https://169.254.169.254/latest/meta-data/")
            assert raw_url.status_code == 422
            await api.client.patch(f"{BASE}/{endpoint['id']}", json={"enabled": False})
            disabled = await notify(endpoint_id=endpoint["id"])
            assert disabled.status_code == 422
            assert "disabled" in disabled.json()["detail"]
            return str(endpoint["id"])

    endpoint_id = asyncio.run(body())
    [message] = read_messages(
        stack_settings, api_config.topics["notification_requested"], expected=1
    )
    event = EventDeserializer().deserialize(message.value() or b"", message.topic() or "")
    assert isinstance(event, NotificationRequested)
    assert (event.endpoint_id, event.recipient, event.schema_version) == (
        endpoint_id,
        endpoint_id,
        2,
    )


@pytest.mark.parametrize(
    ("params", "accepted"),
    [
        ({"reset_url": "https://app.acme.example/reset?t=1"}, True),
        ({"reset_url": "https://eu.login.acme.example/reset"}, True),  # *.login.acme.example
        ({"note": "no links here: amount 5"}, True),
        ({"reset_url": "https://evil.example/reset"}, False),
        ({"reset_url": "https://app.acme.example.evil.example/"}, False),
        ({"reset_url": "https://login.acme.example/"}, False),  # *.x is subdomains only
        ({"reset_url": "//evil.example/reset"}, False),
        ({"reset_url": "https:\\\\evil.example/reset"}, False),
        ({"body": "see www.evil.example for details"}, False),
        ({"body": "visit https://app.acme.example/ or http://evil.example/"}, False),
        ({"reset_url": "javascript:alert(1)"}, False),
        ({"reset_url": "ftp://app.acme.example/"}, False),
    ],
)
def test_email_links_must_point_to_the_tenants_link_hosts(
    stack_settings: Settings, api_config: ApiConfig, params: dict[str, str], accepted: bool
) -> None:
    async def body() -> tuple[int, dict[str, Any], list[str]]:
        async with running_api(stack_settings, api_config) as api:
            hosts = await api.client.put(
                "/v1/tenants/acme/link-hosts",
                json={"hosts": ["app.acme.example", "*.login.acme.example"]},
            )
            assert hosts.status_code == 200, hosts.text
            response = await api.client.post(
                "/v1/tenants/acme/notifications",
                json={
                    "channel": "EMAIL",
                    "recipient": "user@acme.example",
                    "template": "password_reset",
                    "params": {"expires_in": "1 hour", **params},
                },
            )
            listed = (await api.client.get("/v1/tenants/acme/link-hosts")).json()["hosts"]
            return response.status_code, response.json(), listed

    code, answer, listed = asyncio.run(body())
    assert listed == ["*.login.acme.example", "app.acme.example"]
    if accepted:
        assert code == 202, answer
    else:
        assert code == 422, answer
        assert answer["detail"].startswith("params."), answer


def test_without_link_hosts_an_email_may_carry_no_link(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> dict[str, Any]:
        async with running_api(stack_settings, api_config) as api:
            response = await api.client.post(
                "/v1/tenants/acme/notifications",
                json={
                    "channel": "EMAIL",
                    "recipient": "victim@example.com",
                    "template": "password_reset",
                    "params": {"reset_url": "https://phish.example/reset", "expires_in": "1h"},
                },
            )
            assert response.status_code == 422
            return dict(response.json())

    problem = asyncio.run(body())
    assert "'phish.example' is not one" in problem["detail"]
    assert "/v1/tenants/acme/link-hosts" in problem["detail"]
