"""Regression tests of issue 14's 500s and contract drift: every case answers a
documented 4xx, as application/problem+json, never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from runtime import Settings, new_registry
from services.api import ApiConfig, ApiServer
from tests.services.api.conftest import TenantKeys, running_api

BASE = "/v1/tenants/acme/projects"
NOTIFY = "/v1/tenants/acme/notifications"


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_text_postgres_refuses_is_a_422(stack_settings: Settings, api_config: ApiConfig) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            for fields in (
                {"name": "nul\x00byte"},
                {"name": "ok", "description": "nul\x00byte"},
            ):
                _problem(await api.client.post(BASE, json=fields), 422)
            # A lone surrogate (valid JSON, invalid Unicode): no encoder takes it.
            raw = b'{"name": "lone \\ud800 surrogate"}'
            _problem(
                await api.client.post(
                    BASE, content=raw, headers={"Content-Type": "application/json"}
                ),
                422,
            )
            pair = b'{"name": "emoji \\ud83d\\ude00"}'  # a proper pair is fine
            ok = await api.client.post(
                BASE, content=pair, headers={"Content-Type": "application/json"}
            )
            assert ok.status_code == 201, ok.text

    asyncio.run(body())


def test_names_are_not_stripped_past_their_max_length(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            for name in (" padded", "padded ", "x" * 200 + "   ", "   ", "new\nline\n", "tab\x01"):
                _problem(await api.client.post(BASE, json={"name": name}), 422)
            assert (await api.client.post(BASE, json={"name": "x" * 200})).status_code == 201
            inner = await api.client.post(BASE, json={"name": "two  words"})
            assert inner.status_code == 201

    asyncio.run(body())


def test_if_match_is_parsed_strictly(stack_settings: Settings, api_config: ApiConfig) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            pid = (await api.client.post(BASE, json={"name": "versioned"})).json()["id"]
            item = f"{BASE}/{pid}"
            # Beyond a bigint: names no version (412), never reaches Postgres.
            beyond = await api.client.patch(
                item, json={"description": "x"}, headers={"If-Match": '"9223372036854775808"'}
            )
            assert _problem(beyond, 412)
            assert beyond.headers["ETag"] == '"1"'
            for malformed in ('"²"', '"' + "9" * 5000 + '"', "1", 'W/"1"', '"1", "2"', '"abc"'):
                response = await api.client.patch(
                    item, json={"description": "x"}, headers={b"If-Match": malformed.encode()}
                )
                _problem(response, 422)
            stale = await api.client.put(item, json={"name": "v"}, headers={"If-Match": '"7"'})
            _problem(stale, 412)
            fresh = await api.client.put(item, json={"name": "v"}, headers={"If-Match": '"1"'})
            assert fresh.status_code == 200
            any_version = await api.client.delete(item, headers={"If-Match": "*"})
            assert any_version.status_code == 204

    asyncio.run(body())


def test_patch_needs_one_non_null_field_as_documented(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            pid = (await api.client.post(BASE, json={"name": "patchy"})).json()["id"]
            for patch in ({}, {"name": None}, {"description": None, "status": "archived"}):
                _problem(await api.client.patch(f"{BASE}/{pid}", json=patch), 422)
            document = api.app.openapi()
            schema = document["components"]["schemas"]["ProjectPatch"]
            assert schema["minProperties"] == 1
            assert all("anyOf" not in field for field in schema["properties"].values())

    asyncio.run(body())


def test_cursors_and_the_405_allow_header(stack_settings: Settings, api_config: ApiConfig) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            for cursor in ("not a cursor", "!" * 22, "A" * 23):
                _problem(await api.client.get(BASE, params={"cursor": cursor}), 422)
            assert (await api.client.get(BASE, params={"cursor": "A" * 22})).status_code == 200
            pattern = api.app.openapi()["paths"][BASE.replace("acme", "{tenant}")]["get"]
            cursor_param = next(p for p in pattern["parameters"] if p["name"] == "cursor")
            assert "pattern" in cursor_param["schema"]

            wrong = await api.client.post(f"{BASE}/{uuid.uuid4()}", json={"name": "x"})
            _problem(wrong, 405)
            assert wrong.headers["Allow"] == "DELETE, GET, PATCH, PUT"
            collection = await api.client.delete(BASE)
            assert collection.headers["Allow"] == "GET, POST"

    asyncio.run(body())


def test_notification_params_and_recipients_are_bounded(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    email = {"channel": "EMAIL", "recipient": "a@b.example", "template": "welcome"}

    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            many = {f"k{i}": "v" for i in range(51)}
            for bad in (
                {**email, "params": many},
                {**email, "params": {"bad key": "v"}},
                {**email, "params": {"k": "v" * 2001}},
                {**email, "params": {"k": "nul\x00"}},
                {**email, "recipient": "https://example.com/hook"},
                {**email, "channel": "WEBHOOK", "recipient": "http://example.com/plain"},
                {**email, "dedupe_key": None},
            ):
                _problem(await api.client.post(NOTIFY, json=bad), 422)
            fifty = {f"k{i}": "v" * 2000 for i in range(50)}
            assert (
                await api.client.post(NOTIFY, json={**email, "params": fifty})
            ).status_code == 202
            document = api.app.openapi()["components"]["schemas"]["EmailNotification"]
            assert document["properties"]["params"]["maxProperties"] == 50
            assert document["properties"]["params"]["additionalProperties"] is False

    asyncio.run(body())


def test_an_event_larger_than_the_broker_takes_is_a_413_before_publishing(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    # A body limit above the producer's message limit: the event is refused by the
    # client library (MSG_SIZE_TOO_LARGE) before anything is sent.
    settings = stack_settings.with_overrides(api_max_body_bytes=4 * 1024 * 1024)
    config = dataclasses.replace(api_config, publisher_config={"message.max.bytes": "20000"})
    params = {f"k{i}": "v" * 2000 for i in range(20)}

    async def body() -> None:
        async with running_api(settings, config) as api:
            response = await api.client.post(
                NOTIFY,
                json={
                    "channel": "EMAIL",
                    "recipient": "a@b.example",
                    "template": "t",
                    "params": params,
                },
            )
            assert "larger than the broker" in _problem(response, 413)["detail"]

    asyncio.run(body())


def test_an_unparsable_body_is_a_documented_4xx(
    stack_settings: Settings, api_config: ApiConfig
) -> None:
    async def body() -> None:
        async with running_api(stack_settings, api_config) as api:
            response = await api.client.post(
                BASE, content=b"{not json", headers={"Content-Type": "application/json"}
            )
            status = response.status_code
            assert status in (400, 422)
            documented = api.app.openapi()["paths"]["/v1/tenants/{tenant}/projects"]["post"]
            assert str(status) in documented["responses"]
            _problem(response, status)

    asyncio.run(body())


@pytest.fixture
def live_api(stack_settings: Settings, api_config: ApiConfig) -> Iterator[tuple[str, int, str]]:
    """The API over real HTTP (uvicorn): host, port, a key of tenant acme."""
    token = TenantKeys(stack_settings, api_config.schema_for(stack_settings)).token("acme")
    with ApiServer(stack_settings, config=api_config, registry=new_registry()) as server:
        yield "127.0.0.1", server.port, token


def _raw_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_huge_declared_body_is_refused_before_it_is_read(
    live_api: tuple[str, int, str],
) -> None:
    host, port, token = live_api
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(
            f"POST {BASE} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 157286400\r\n\r\n{".encode()
        )
        # Only one byte of the 150 MB was sent: the answer comes anyway.
        head = _raw_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"application/problem+json" in head


def test_a_chunked_body_is_cut_off_at_the_limit(live_api: tuple[str, int, str]) -> None:
    host, port, token = live_api
    connection = http.client.HTTPConnection(host, port, timeout=20)
    chunk = b"x" * 65536
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        # Up to 8 MiB offered; the server answers after the first ~256 KiB.
        for _ in range(128):
            sent += len(chunk)
            yield chunk

    # The server may answer and close while we are still sending.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        connection.request(
            "POST",
            NOTIFY,
            body=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
    response = connection.getresponse()
    assert response.status == 413
    assert response.getheader("content-type") == "application/problem+json"
    connection.close()
