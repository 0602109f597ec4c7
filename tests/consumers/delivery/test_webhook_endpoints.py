"""Webhook delivery to registered endpoints: the SSRF guard at delivery time (with the
development setting off), per-endpoint secrets and rotation, deleted and disabled
endpoints, and rows written before endpoints existed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from consumers.delivery import SecretBox, SecretBoxError, SignatureError, TargetGuard, verify
from consumers.delivery.endpoints import LOCAL_ENDPOINT_SECRETS_KEY, new_signing_secret
from tests.consumers.delivery.conftest import SECRET, StartWorker
from tests.consumers.delivery.support import (
    ENDPOINT_SECRET,
    WebhookReceiver,
    attempts_of,
    insert_notifications,
    legacy_webhook,
    register_endpoint,
    row_of,
    status_of,
    webhook,
)
from tests.consumers.delivery.test_targets import PUBLIC, resolver_of
from tests.support.waiting import wait_for

Receiver = Callable[..., WebhookReceiver]


def test_delivery_refuses_private_targets_without_the_development_setting(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()  # listening on 127.0.0.1: every request below would reach it
    port = server.port
    resolve = resolver_of(
        {
            "loopback.test": [["127.0.0.1"]],
            "api.payments-partner.com": [["10.20.30.40"]],
            # Public when the endpoint was registered, loopback when the worker connects.
            "rebind.example.com": [[PUBLIC], ["127.0.0.1"]],
        }
    )
    asyncio.run(TargetGuard(resolver=resolve).vet(f"http://rebind.example.com:{port}/"))
    urls = [
        f"http://127.0.0.1:{port}/a",
        f"http://[::1]:{port}/b",
        f"http://[::ffff:127.0.0.1]:{port}/c",
        f"http://2130706433:{port}/d",
        f"http://0x7f.1:{port}/e",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/f",
        f"http://loopback.test:{port}/g",
        f"http://api.payments-partner.com:{port}/h",
        f"http://rebind.example.com:{port}/i",
    ]
    ids = insert_notifications(db, [webhook(url) for url in urls])
    start_worker(allow_private_targets=False, resolver=resolve)
    assert wait_for(lambda: all(status_of(db, i) == "failed" for i in ids), timeout=30)

    for nid, url in zip(ids, urls, strict=True):
        row = row_of(db, nid)
        assert row["failure_reason"] == "permanent", url
        [attempt] = attempts_of(db, nid)
        assert attempt["error_class"] == "refused_target", (url, attempt["error"])
        assert "127.0.0.1" not in (row["last_error"] or ""), url
    assert server.snapshot() == []


def test_delivery_refuses_plain_http_when_https_is_required(
    db: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    [nid] = insert_notifications(db, [webhook(f"http://{PUBLIC}/hook")])
    start_worker(webhook_require_https=True)
    assert wait_for(lambda: status_of(db, nid) == "failed", timeout=30)
    [attempt] = attempts_of(db, nid)
    assert (attempt["error_class"], attempt["error"]) == (
        "refused_target",
        "the scheme must be https",
    )


def test_a_rotated_secret_signs_alongside_the_previous_one_during_its_grace(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    endpoint_id = register_endpoint(db, server.url())
    new_secret = new_signing_secret()
    box = SecretBox(LOCAL_ENDPOINT_SECRETS_KEY)
    db.execute(
        "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed,"
        " previous_secret_expires_at = now() + interval '1 hour', secret_sealed = %s"
        " WHERE id = %s",
        (box.seal(new_secret, tenant="tenant-1", endpoint_id=endpoint_id), endpoint_id),
    )
    [nid] = insert_notifications(db, [{"channel": "WEBHOOK", "endpoint_id": endpoint_id}])
    start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)
    [request] = server.snapshot()
    header = request.headers["sidestream-signature"]
    assert header.count("v1=") == 2
    verify(new_secret, header, request.body)
    verify(ENDPOINT_SECRET, header, request.body)


def test_an_expired_previous_secret_no_longer_signs(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    endpoint_id = register_endpoint(db, server.url())
    db.execute(
        "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed,"
        " previous_secret_expires_at = now() - interval '1 second' WHERE id = %s",
        (endpoint_id,),
    )
    [nid] = insert_notifications(db, [{"channel": "WEBHOOK", "endpoint_id": endpoint_id}])
    start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)
    [request] = server.snapshot()
    assert request.headers["sidestream-signature"].count("v1=") == 1


def test_deleted_disabled_and_foreign_endpoints_fail_without_a_request(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    disabled = register_endpoint(db, server.url("/disabled"), enabled=False)
    foreign = register_endpoint(db, server.url("/foreign"), tenant="someone-else")
    ids = insert_notifications(
        db,
        [
            {"channel": "WEBHOOK", "endpoint_id": uuid.uuid4()},
            {"channel": "WEBHOOK", "endpoint_id": disabled},
            # Another tenant's endpoint id: the join is by tenant too.
            {"channel": "WEBHOOK", "endpoint_id": foreign},
        ],
    )
    start_worker()
    assert wait_for(lambda: all(status_of(db, i) == "failed" for i in ids), timeout=30)
    classes = [attempts_of(db, i)[0]["error_class"] for i in ids]
    assert classes == ["endpoint_gone", "endpoint_disabled", "endpoint_gone"]
    assert server.snapshot() == []


def test_a_row_written_before_endpoints_is_signed_with_the_deployment_secret(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    [nid] = insert_notifications(db, [legacy_webhook(server.url("/old"))])
    start_worker()
    assert wait_for(lambda: status_of(db, nid) == "sent", timeout=30)
    [request] = server.snapshot()
    verify(SECRET, request.headers["sidestream-signature"], request.body)
    assert row_of(db, nid)["destination"] == server.destination


def test_a_secret_sealed_with_another_key_fails_with_the_fix(
    db: psycopg.Connection[Any], receiver: Receiver, start_worker: StartWorker
) -> None:
    server = receiver()
    endpoint_id = register_endpoint(db, server.url(), key="another-key-of-the-api-0123")
    [nid] = insert_notifications(db, [{"channel": "WEBHOOK", "endpoint_id": endpoint_id}])
    start_worker()
    assert wait_for(lambda: status_of(db, nid) == "failed", timeout=30)
    assert "SIDESTREAM_DELIVERY_ENDPOINT_SECRETS_KEY" in (row_of(db, nid)["last_error"] or "")
    assert server.snapshot() == []


def test_secret_box_binds_a_secret_to_its_tenant_and_endpoint() -> None:
    box = SecretBox("a-key-of-sixteen-or-more")
    endpoint = uuid.uuid4()
    sealed = box.seal("whsec_x", tenant="t1", endpoint_id=endpoint)
    assert b"whsec_x" not in sealed
    assert box.open(sealed, tenant="t1", endpoint_id=endpoint) == "whsec_x"
    with pytest.raises(SecretBoxError):
        box.open(sealed, tenant="t2", endpoint_id=endpoint)
    with pytest.raises(SecretBoxError):
        box.open(sealed, tenant="t1", endpoint_id=uuid.uuid4())
    with pytest.raises(SecretBoxError):
        SecretBox("another-key-of-sixteen").open(sealed, tenant="t1", endpoint_id=endpoint)
    assert "a-key" not in repr(box)


def test_signatures_of_two_secrets_verify_with_either() -> None:
    from consumers.delivery import sign_all

    header = sign_all(["new", "old"], b"{}")
    verify("new", header, b"{}")
    verify("old", header, b"{}")
    with pytest.raises(SignatureError):
        verify("other", header, b"{}")
