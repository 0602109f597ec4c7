"""Fixtures of the API tests: a migrated schema, private topics, and the app running
in-process (its lifespan entered, an httpx client on an ASGI transport)."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from consumers import CONSUMER_MIGRATIONS
from producers import OUTBOX_MIGRATIONS
from runtime import Settings, new_registry
from runtime.clients import consumer_config, postgres_connect
from runtime.environment import child_environment
from runtime.migrations import migrate
from schemas import EVENT_TYPES
from services import SERVICES_MIGRATIONS
from services.api import ApiConfig, create_app
from services.api.auth import TENANT_PATTERN
from services.api.keys import NewApiKey, create_key, create_tenant, revoke_key
from services.api.resources import ApiResources


@pytest.fixture
def api_schema(pg_conn: psycopg.Connection[Any], pg_schema: str) -> str:
    """A fresh schema with the outbox, consumer offsets and projects tables."""
    migrate(
        pg_conn, [OUTBOX_MIGRATIONS, CONSUMER_MIGRATIONS, SERVICES_MIGRATIONS], schema=pg_schema
    )
    return pg_schema


@pytest.fixture
def api_topics(make_topic: Callable[..., str]) -> dict[str, str]:
    """A private topic per event subject (the relay and the publisher write there)."""
    return {subject: make_topic(subject, partitions=3) for subject in EVENT_TYPES}


@pytest.fixture
def api_config(api_schema: str, api_topics: dict[str, str], key_prefix: str) -> ApiConfig:
    """An isolated instance: own schema, topics and cache namespace; no rate limit."""
    return ApiConfig(
        schema=api_schema,
        topics=api_topics,
        cache_namespace=f"{key_prefix}api",
        rate_limit=None,
        view_events=False,
    )


class TenantKeys:
    """Makes tenants and API keys in a test's schema (what `sidestream tenants|keys
    create` do), and remembers one full-scope key per tenant."""

    def __init__(self, settings: Settings, schema: str) -> None:
        self._settings = settings
        self._schema = schema
        self._hash_key = settings.api_key_hash_secret.get_secret_value().encode()
        self._default: dict[str, str] = {}

    def key(
        self,
        tenant: str,
        *scopes: str,
        expires_at: datetime | None = None,
    ) -> NewApiKey:
        """A new key of ``tenant`` (created if missing) with ``scopes`` (default: admin)."""
        with postgres_connect(self._settings, schema=self._schema, autocommit=True) as conn:
            if (
                conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant,)).fetchone()
                is None
            ):
                create_tenant(conn, tenant)
            return create_key(
                conn,
                tenant,
                scopes=scopes or ("admin",),
                hash_key=self._hash_key,
                expires_at=expires_at,
            )

    def token(self, tenant: str) -> str:
        """The tenant's full-scope (admin) key, made on first use."""
        if tenant not in self._default:
            self._default[tenant] = self.key(tenant).token
        return self._default[tenant]

    def revoke(self, key_id: str) -> None:
        with postgres_connect(self._settings, schema=self._schema, autocommit=True) as conn:
            assert revoke_key(conn, key_id)

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}


class TenantAuth(httpx.Auth):
    """Sends the admin key of the path's tenant unless the request has its own
    ``Authorization`` (tests of authentication send theirs, or an empty one)."""

    def __init__(self, keys: TenantKeys) -> None:
        self.keys = keys

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        parts = request.url.path.split("/")
        if (
            "authorization" not in request.headers
            and parts[1:3] == ["v1", "tenants"]
            and re.fullmatch(TENANT_PATTERN, parts[3])
        ):
            request.headers["Authorization"] = f"Bearer {self.keys.token(parts[3])}"
        elif request.headers.get("authorization") == "":
            del request.headers["authorization"]
        yield request


class RunningApi:
    """An app whose lifespan is running, and a client that calls it in-process (sending
    the path tenant's admin key unless a request has its own ``Authorization``)."""

    def __init__(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        registry: CollectorRegistry,
        keys: TenantKeys,
    ):
        self.app = app
        self.client = client
        self.registry = registry
        self.keys = keys

    @property
    def resources(self) -> ApiResources:
        resources: ApiResources = self.app.state.resources
        return resources

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings,
    config: ApiConfig,
    *,
    client_address: tuple[str, int] = ("10.1.2.3", 40000),
    **options: Any,
) -> AsyncIterator[RunningApi]:
    registry = new_registry()
    app = create_app(settings, config=config, registry=registry, **options)
    keys = TenantKeys(settings, config.schema_for(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client_address)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://api",
            auth=TenantAuth(keys) if settings.api_auth == "keys" else None,
        ) as client:
            yield RunningApi(app, client, registry, keys)


def outbox_rows(conn: psycopg.Connection[Any], schema: str) -> list[tuple[Any, ...]]:
    """(event_type, topic, key, header_names) of every outbox row, in id order."""
    return conn.execute(
        f'SELECT event_type, topic, key, header_names FROM "{schema}".outbox ORDER BY id'
    ).fetchall()


def read_messages(
    settings: Settings, topic: str, *, expected: int, timeout: float = 30.0
) -> list[Message]:
    """At least ``expected`` messages of ``topic`` (every partition from the start), then
    whatever else arrives within half a second; fails after ``timeout`` seconds."""
    consumer = Consumer(
        consumer_config(settings, f"reader-{uuid.uuid4().hex[:10]}", **{"fetch.wait.max.ms": 50})
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.1):
                error = message.error()
                if error is None:
                    messages.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
            if len(messages) >= expected:
                settle_until = settle_until or time.monotonic() + 0.5
                if time.monotonic() >= settle_until:
                    return messages
        raise AssertionError(f"read {len(messages)} of {expected} messages of {topic}")
    finally:
        consumer.close()


@contextlib.contextmanager
def pipeline_process(
    settings: Settings, *, schema: str, entity_topic: str, group: str, namespace: str
) -> Iterator[subprocess.Popen[str]]:
    """The outbox relay and the invalidation consumer in a child process (see
    ``pipeline_peer.py``); SIGTERM and a bounded wait on exit."""
    env = child_environment(settings, clean=True)
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
        # tansu holds every fetch for the full fetch.wait.max.ms (librdkafka: 500 ms)
        # even when data is waiting, which Kafka does not: keep it short here so the
        # measured stale window is the pipeline's, not the local broker's.
        SIDESTREAM_KAFKA_EXTRA=json.dumps({"fetch.wait.max.ms": "10"}),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("pipeline_peer.py")),
            schema,
            entity_topic,
            group,
            namespace,
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "READY"
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
