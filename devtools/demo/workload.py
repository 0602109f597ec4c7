"""What the demo sends: a mixed workload against the API (one key per demo tenant) and
events published directly, plus a few poison records.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.progress import Progress

from devtools.demo.catchers import _HookCatcher
from producers.synthetic import publish_load
from runtime import Settings
from runtime.clients import kafka_producer, postgres_connect
from schemas.topics import topic_for
from services.api.keys import create_key, create_tenant, list_tenants

#: Records that are no event at all, published to show the dead-letter path.
POISON_RECORDS = 3


@dataclass
class ApiWorkload:
    """What the API answered during the demo."""

    statuses: Counter[int] = field(default_factory=Counter)
    writes: int = 0  # 2xx POST/PATCH on projects: one AuditEvent + EntityChanged each
    views: int = 0  # 2xx item GETs: one AnalyticsEvent each
    notifications: int = 0  # 202s: one NotificationRequested each
    latencies_ms: list[float] = field(default_factory=list)


DEMO_TENANTS = [f"demo-{name}" for name in ("acme", "globex", "initech", "umbrella", "hooli")]


def _demo_keys(config: Settings) -> dict[str, str]:
    """Each demo tenant (made once) and a fresh API key of it, as `sidestream tenants
    create` / `sidestream keys create` would make them: write + notify, and admin, since
    the demo registers each tenant's webhook endpoint."""
    hash_key = config.api_key_hash_secret.get_secret_value().encode()
    keys = {}
    with postgres_connect(config, autocommit=True) as conn:
        known = {tenant.tenant_id for tenant in list_tenants(conn)}
        for tenant in DEMO_TENANTS:
            if tenant not in known:
                create_tenant(conn, tenant, "made by sidestream demo")
            keys[tenant] = create_key(
                conn,
                tenant,
                scopes=["write", "notify", "admin"],
                hash_key=hash_key,
                description="demo",
            ).token
    return keys


async def _drive_api(
    base_url: str,
    operations: int,
    progress: Progress,
    hooks: _HookCatcher,
    keys: dict[str, str],
) -> ApiWorkload:
    """Create projects and a webhook endpoint per tenant, then a mix of cached reads,
    updates and notification requests (emails, and webhooks to the tenant's endpoint),
    each with the API key of the tenant it addresses."""
    result = ApiWorkload()
    rng = random.Random(42)
    tenants = DEMO_TENANTS
    projects: dict[str, list[str]] = {tenant: [] for tenant in tenants}
    task = progress.add_task("driving the API", total=operations)
    run_token = uuid.uuid4().hex[:6]
    done = 0
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:

        async def call(method: str, path: str, client_id: str, **kwargs: Any) -> httpx.Response:
            started = time.perf_counter()
            tenant = path.split("/")[3]  # /v1/tenants/{tenant}/...
            headers = {"X-Client-ID": client_id, "Authorization": f"Bearer {keys[tenant]}"}
            response = await client.request(method, path, headers=headers, **kwargs)
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[response.status_code] += 1
            return response

        for tenant in tenants:
            for i in range(8):
                response = await call(
                    "POST",
                    f"/v1/tenants/{tenant}/projects",
                    "setup",
                    # Names are unique per tenant: a run token keeps reruns from colliding.
                    json={"name": f"project {i} ({run_token})", "description": "by the demo"},
                )
                if response.status_code == 201:
                    projects[tenant].append(response.json()["id"])
                    result.writes += 1

        endpoints: dict[str, str] = {}
        for tenant in tenants:
            # Webhooks go to registered endpoints; the secret is shown only in this answer.
            response = await call(
                "POST",
                f"/v1/tenants/{tenant}/webhook-endpoints",
                "setup",
                json={"url": hooks.url(tenant), "event_types": ["invoice_ready"]},
            )
            if response.status_code == 201:
                endpoints[tenant] = response.json()["id"]
                hooks.secrets[tenant] = response.json()["secret"]

        async def client_loop(number: int, count: int) -> None:
            nonlocal done
            client_id = f"demo-client-{number}"
            for _ in range(count):
                tenant = rng.choice(tenants)
                if not projects[tenant]:
                    continue
                project = rng.choice(projects[tenant])
                roll = rng.random()
                if roll < 0.70:
                    response = await call(
                        "GET", f"/v1/tenants/{tenant}/projects/{project}", client_id
                    )
                    result.views += response.status_code == 200
                elif roll < 0.85:
                    await call("GET", f"/v1/tenants/{tenant}/projects?limit=20", client_id)
                elif roll < 0.95:
                    response = await call(
                        "PATCH",
                        f"/v1/tenants/{tenant}/projects/{project}",
                        client_id,
                        json={"description": f"edited {rng.random():.6f}"},
                    )
                    result.writes += response.status_code == 200
                else:
                    email = {
                        "channel": "EMAIL",
                        "recipient": f"ops@{tenant}.example",
                        "template": "welcome",
                        "params": {"name": tenant},
                    }
                    hook = {
                        "channel": "WEBHOOK",
                        "endpoint_id": endpoints.get(tenant),
                        "template": "invoice_ready",
                        "params": {"invoice_id": f"inv-{done}", "amount": "42 EUR"},
                    }
                    response = await call(
                        "POST",
                        f"/v1/tenants/{tenant}/notifications",
                        client_id,
                        json=hook if roll < 0.975 and tenant in endpoints else email,
                    )
                    result.notifications += response.status_code == 202
                done += 1
                progress.update(task, completed=done)

        clients = 16
        await asyncio.gather(*(client_loop(n, operations // clients) for n in range(clients)))
    return result


def _publish_directly(
    config: Settings, events: int, poison: int, progress: Progress
) -> Counter[str]:
    """Events services publish without a database write, plus bytes that are no event."""
    task = progress.add_task("publishing", total=events)
    result = publish_load(
        config,
        rate=5000,
        count=events,
        duration=None,
        kinds=("audit", "analytics", "notification"),
        seed=int(time.time()),
        on_progress=lambda done, _total: progress.update(task, completed=done),
    )
    raw = kafka_producer(config)
    for _ in range(poison):
        raw.produce(topic_for("audit_event"), value=os.urandom(24), key=b"poison")
    raw.flush(10)
    return result.published
