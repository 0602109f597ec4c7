"""The API's edges: rate limits (429), a saturated publisher (503), RED metrics by route
template, request ids, probes, notifications, and the OpenAPI document."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from typing import Any

import pytest

from producers import AsyncEventPublisher, EventPublisher
from runtime import Settings, new_registry
from schemas import EventDeserializer, NotificationRequested
from services.api import ApiConfig
from services.ratelimit import RateLimit
from tests.services.api.conftest import read_messages, running_api


def test_429_exactly_at_the_limit_under_concurrency(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    config = dataclasses.replace(api_config, rate_limit=RateLimit(limit=10, window_s=60.0))
    base = "/v1/tenants/acme/projects"

    async def body() -> None:
        async with running_api(stack_settings, config) as api:
            # A different X-Client-ID per request: the bucket is the principal's anyway.
            burst = await asyncio.gather(
                *(api.client.get(base, headers={"X-Client-ID": f"c{i}"}) for i in range(25))
            )
            ok = [r for r in burst if r.status_code == 200]
            limited = [r for r in burst if r.status_code == 429]
            assert len(ok) == 10
            assert len(limited) == 15
            assert sorted(int(r.headers["RateLimit-Remaining"]) for r in ok) == list(range(10))
            for response in ok + limited:
                assert response.headers["RateLimit-Limit"] == "10"
                assert response.headers["RateLimit-Policy"] == "10;w=60"
                assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
            for response in limited:
                assert response.headers["RateLimit-Remaining"] == "0"
                # One request every 6 s is the sustained rate: the next slot is <= 6 s away.
                assert 1 <= int(response.headers["Retry-After"]) <= 6
                assert response.json()["status"] == 429
                assert response.headers["content-type"] == "application/problem+json"
            # Buckets are per principal (and scope): another key of the same tenant has
            # its own, and so does a key of another tenant; a write is another scope.
            other_key = api.keys.key("acme", "read").token
            other_principal = await api.client.get(
                base, headers={"Authorization": f"Bearer {other_key}"}
            )
            other_tenant = await api.client.get("/v1/tenants/other/projects")
            write = await api.client.post(base, json={"name": "still allowed"})
            assert other_principal.status_code == 200
            assert other_tenant.status_code == 200
            assert write.status_code == 201
            assert (
                api.metric(
                    "sidestream_ratelimit_decisions_total",
                    limiter="sidestream-api",
                    outcome="limited",
                )
                == 15
            )
            # Probes are never limited.
            assert (await api.client.get("/healthz")).status_code == 200

    asyncio.run(body())


def test_503_with_retry_after_when_the_publisher_is_saturated(
    stack_settings: Settings,
    api_config: ApiConfig,
    nowhere_port: int,
) -> None:
    # A publisher whose broker does not exist: nothing is ever delivered, so its queue
    # (3 messages) fills and stays full.
    nowhere = stack_settings.with_overrides(kafka_bootstrap_servers=f"127.0.0.1:{nowhere_port}")
    registry = new_registry()
    publisher = AsyncEventPublisher(
        EventPublisher(settings=nowhere, registry=registry, producer="saturated", max_queue=3)
    )
    config = dataclasses.replace(api_config, shutdown_flush_s=0.2)
    url = "/v1/tenants/acme/notifications"
    request = {"channel": "EMAIL", "recipient": "a@example.com", "template": "welcome"}

    async def body() -> None:
        async with running_api(stack_settings, config, publisher=publisher) as api:
            accepted = [await api.client.post(url, json=request) for _ in range(3)]
            assert [r.status_code for r in accepted] == [202, 202, 202]
            refused = await api.client.post(url, json=request)
            assert refused.status_code == 503, refused.text
            assert 1 <= int(refused.headers["Retry-After"]) <= 5
            assert refused.json()["status"] == 503
            # Reads do not depend on Kafka and keep working.
            assert (await api.client.get("/v1/tenants/acme/projects")).status_code == 200

    asyncio.run(body())


def test_notifications_are_accepted_and_published_with_the_request_id(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    url = "/v1/tenants/acme/notifications"

    async def body() -> list[Any]:
        async with running_api(stack_settings, api_config) as api:
            registered = await api.client.post(
                "/v1/tenants/acme/webhook-endpoints", json={"url": "https://93.184.215.14/x"}
            )
            request = {
                "channel": "WEBHOOK",
                "endpoint_id": registered.json()["id"],
                "template": "t",
            }
            first = await api.client.post(
                url, json=request, headers={"Idempotency-Key": "k-1", "X-Request-ID": "req-n-1"}
            )
            retry = await api.client.post(url, json=request, headers={"Idempotency-Key": "k-1"})
            # A raw URL is no longer a webhook recipient.
            bad = await api.client.post(
                url,
                json={"channel": "WEBHOOK", "recipient": "https://h.example/x", "template": "t"},
            )
            assert first.status_code == 202
            assert first.json()["status"] == "accepted"
            assert retry.json()["id"] == first.json()["id"]
            assert bad.status_code == 422
            return [first.json()["id"]]

    (notification_id,) = asyncio.run(body())
    messages = read_messages(
        stack_settings, api_config.topics["notification_requested"], expected=2
    )
    events = []
    for message in messages:
        event = EventDeserializer().deserialize(message.value() or b"", message.topic() or "")
        assert isinstance(event, NotificationRequested)
        events.append(event)
    assert {e.notification_id for e in events} == {notification_id}
    assert {e.dedupe_key for e in events} == {"k-1"}
    headers = {dict(m.headers() or [])["x-request-id"] for m in messages}
    assert b"req-n-1" in headers


def test_metrics_use_route_templates_and_ids_travel(
    stack_settings: Settings, api_config: ApiConfig, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            for _ in range(3):
                await api.client.get(f"/v1/tenants/acme/projects/{uuid.uuid4()}")
            response = await api.client.get("/nowhere", headers={"X-Request-ID": "abc-123"})
            assert response.status_code == 404
            assert response.headers["X-Request-ID"] == "abc-123"
            assert response.json()["request_id"] == "abc-123"
            made = await api.client.get("/healthz", headers={"X-Request-ID": "bad id!"})
            assert made.headers["X-Request-ID"] != "bad id!"
            assert len(made.headers["X-Request-ID"]) == 32
            text = (await api.client.get("/metrics")).text
            route = "/v1/tenants/{tenant}/projects/{project_id}"
            assert (
                api.metric("sidestream_api_requests_total", method="GET", route=route, status="404")
                == 3
            )
            assert (
                api.metric(
                    "sidestream_api_request_duration_seconds_count", method="GET", route=route
                )
                == 3
            )
            assert (
                api.metric(
                    "sidestream_api_requests_total", method="GET", route="<unmatched>", status="404"
                )
                == 1
            )
            assert "/v1/tenants/acme" not in text  # no raw paths as labels
            assert "sidestream_cache_misses_total" in text
            ready = await api.client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "ready"}

    with caplog.at_level(logging.INFO, logger="services.api.access"):
        asyncio.run(body())
    lines = [r for r in caplog.records if r.name == "services.api.access"]
    tagged = [r for r in lines if getattr(r, "request_id", None) == "abc-123"]
    assert tagged
    assert getattr(tagged[0], "route", None) == "<unmatched>"
    assert getattr(tagged[0], "status", None) == 404


def test_readyz_is_503_when_postgres_is_unreachable(
    stack_settings: Settings,
    api_config: ApiConfig,
    nowhere_port: int,
) -> None:
    # No authentication: keys live in the database that is down here.
    down = stack_settings.with_overrides(
        postgres_dsn=f"postgresql://postgres@127.0.0.1:{nowhere_port}/sidestream",
        api_auth="none",
    )
    config = dataclasses.replace(api_config, pool_timeout_s=0.5)

    async def body() -> None:
        async with running_api(down, config) as api:
            ready = await api.client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert (await api.client.get("/healthz")).status_code == 200
            read = await api.client.get(f"/v1/tenants/acme/projects/{uuid.uuid4()}")
            assert read.status_code == 503
            assert read.headers["Retry-After"] == "1"

    asyncio.run(body())


def test_openapi_describes_every_route_and_its_errors(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> dict[str, Any]:
        async with running_api(stack_settings, api_config) as api:
            response = await api.client.get("/openapi.json")
            return dict(json.loads(response.text))

    document = asyncio.run(body())
    paths = document["paths"]
    item = paths["/v1/tenants/{tenant}/projects/{project_id}"]
    collection = paths["/v1/tenants/{tenant}/projects"]
    expected = {
        ("get", "/v1/tenants/{tenant}/projects/{project_id}"): {"200", "404", "422", "429", "503"},
        ("put", "/v1/tenants/{tenant}/projects/{project_id}"): {
            "200",
            "404",
            "409",
            "412",
            "422",
            "429",
            "503",
        },
        ("patch", "/v1/tenants/{tenant}/projects/{project_id}"): {
            "200",
            "404",
            "409",
            "412",
            "422",
            "429",
            "503",
        },
        ("delete", "/v1/tenants/{tenant}/projects/{project_id}"): {
            "204",
            "404",
            "412",
            "422",
            "429",
            "503",
        },
        ("post", "/v1/tenants/{tenant}/projects"): {"201", "409", "422", "429", "503"},
        ("get", "/v1/tenants/{tenant}/projects"): {"200", "422", "429", "503"},
        ("post", "/v1/tenants/{tenant}/notifications"): {"202", "422", "429", "503"},
    }
    for (method, path), statuses in expected.items():
        assert statuses <= set(paths[path][method]["responses"]), (method, path)
    assert "Retry-After" in item["get"]["responses"]["429"]["headers"]
    # Errors are documented with the media type they are served as.
    problem = collection["post"]["responses"]["409"]["content"]["application/problem+json"]
    assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}
    for method, path in expected:
        operation = paths[path][method]
        assert {"401", "403"} <= set(operation["responses"]), (method, path)
        assert operation["security"] == [{"ApiKey": []}]
        for status, response in operation["responses"].items():
            if status[0] in "45":
                assert set(response["content"]) == {"application/problem+json"}, status
    assert document["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert {"/metrics", "/healthz", "/readyz"} <= set(paths)


def test_an_unexpected_error_is_a_500_problem_with_the_request_id(
    stack_settings: Settings, api_config: ApiConfig, unique: Any
) -> None:
    # A schema without the projects table: the query fails in a way nobody handles.
    config = dataclasses.replace(api_config, schema=unique("missing"))
    open_api = stack_settings.with_overrides(api_auth="none")  # no api_keys table either

    async def body() -> None:
        async with running_api(open_api, config) as api:
            response = await api.client.get(
                f"/v1/tenants/acme/projects/{uuid.uuid4()}", headers={"X-Request-ID": "boom-1"}
            )
            assert response.status_code == 500
            assert response.headers["X-Request-ID"] == "boom-1"
            assert response.json() == {
                "type": "about:blank",
                "title": "Internal Server Error",
                "status": 500,
                "request_id": "boom-1",
            }
            route = "/v1/tenants/{tenant}/projects/{project_id}"
            assert api.metric("sidestream_api_request_errors_total", method="GET", route=route) == 1

    asyncio.run(body())
