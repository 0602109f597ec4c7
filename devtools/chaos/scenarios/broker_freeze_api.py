"""Scenario ``broker-freeze-api``: ``broker-freeze``, with the writes made through the
reference API (:mod:`services.api`) instead of ``Outbox.add``.

The API runs in this process (uvicorn on a thread, real HTTP) against the private stack.
A client creates projects and changes them (``POST`` / ``PATCH``) at a steady rate; each
successful write commits the project row, an ``AuditEvent`` and an ``EntityChanged`` in
one transaction. The broker is frozen meanwhile, as in ``broker-freeze``.

Passes if no write failed while Kafka was frozen (a write never waits on Kafka), and
every write's audit event became exactly one row — and its ``EntityChanged`` reached its
topic — after the thaw.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
from psycopg import sql

from devtools.chaos.errors import StalledError
from devtools.chaos.report import ScenarioReport
from devtools.chaos.scenario import ChaosContext, Size
from devtools.chaos.scenarios import broker_freeze
from devtools.chaos.sink_stream import SCHEMA, TOPIC, OutboxSource, SinkStream, StreamParams
from devtools.chaos.traffic import TopicCensus, topic_census
from producers import OUTBOX_MIGRATIONS
from producers.synthetic import SyntheticEvents
from runtime import new_registry
from runtime.clients import postgres_connect
from runtime.migrations import migrate
from schemas import AuditEvent, EntityChanged
from services import SERVICES_MIGRATIONS
from services.api import ApiConfig, ApiServer

NAME = "broker-freeze-api"
ENTITY_TOPIC = "chaos.entity"


# The API answers a write in ~20 ms here (2 cores, shared with the workers): modest rates.
SIZES: dict[Size, broker_freeze.Params] = {
    "tiny": broker_freeze.Params(
        stream=StreamParams(events=300, rate=40), freezes=1, frozen_s=(2, 3), budget_s=180
    ),
    "quick": broker_freeze.Params(
        stream=StreamParams(events=1_000, rate=50), freezes=2, frozen_s=(3, 5), budget_s=300
    ),
    "full": broker_freeze.Params(
        stream=StreamParams(events=10_000, rate=50),
        freezes=5,
        frozen_s=(5, 25),
        budget_s=1_800,
    ),
}


class ApiWriter:
    """Writes projects through the API's HTTP interface on a thread: a new project, or a
    change to one made before, ``count`` writes at ``rate`` per second. Tenants come from
    :class:`SyntheticEvents` (the same skew as every other stream)."""

    def __init__(self, base_url: str, *, count: int, rate: float, seed: int) -> None:
        self.count = count
        self.ok = 0
        """Writes answered 2xx (each committed one audit and one change event)."""
        self.failed = 0
        self.first_errors: list[str] = []
        self.error: BaseException | None = None
        self._base_url = base_url
        self._rate = rate
        self._events = SyntheticEvents(seed=seed, tenants=5, producer="sidestream-chaos")
        self._projects: list[tuple[str, str]] = []  # (tenant, project id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-api-writer", daemon=True)

    def start(self) -> ApiWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float) -> int:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise StalledError(f"{self.count:,} API writes", timeout_s, self.ok + self.failed)
        if self.error is not None:
            raise self.error
        return self.ok

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self._base_url, timeout=10) as client:
                self._write_all(client)
        except BaseException as exc:
            self.error = exc

    def _write_all(self, client: httpx.Client) -> None:
        started = time.monotonic()
        for n in range(self.count):
            if self._stop.is_set():
                return
            delay = started + n / self._rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            tenant = self._events.tenant()
            if self._projects and n % 3:
                tenant, project = self._projects[n % len(self._projects)]
                response = client.patch(
                    f"/v1/tenants/{tenant}/projects/{project}",
                    json={"description": f"change {n}"},
                    headers={"X-Actor-ID": "chaos"},
                )
            else:
                response = client.post(
                    f"/v1/tenants/{tenant}/projects",
                    json={"name": f"project-{n}-{uuid.uuid4().hex[:6]}"},
                    headers={"X-Actor-ID": "chaos"},
                )
                if response.status_code == 201:
                    self._projects.append((tenant, str(response.json()["id"])))
            if response.is_success:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.first_errors) < 3:
                    self.first_errors.append(f"{response.status_code} {response.text[:200]}")


class ApiSource(OutboxSource):
    """Outbox rows written by the reference API, relayed by relay processes."""

    def __init__(self, *, count: int, rate: float, seed: int) -> None:
        super().__init__(count=count, rate=rate, seed=seed)
        self.api_writer: ApiWriter | None = None

    def _start_writer(self, stream: SinkStream) -> None:
        stream.stack.create_topics((ENTITY_TOPIC, 3))
        with postgres_connect(stream.settings, autocommit=True) as conn:
            migrate(conn, [OUTBOX_MIGRATIONS, SERVICES_MIGRATIONS], schema=SCHEMA)
        config = ApiConfig(
            schema=SCHEMA,
            topics={AuditEvent.SUBJECT: TOPIC, EntityChanged.SUBJECT: ENTITY_TOPIC},
            cache_namespace="chaos-api",
            rate_limit=None,
            view_events=False,
            access_log=False,
        )
        # Faults, not authentication, are under test: the local-only open mode (the
        # writer spreads over many tenants).
        open_api = stream.settings.with_overrides(api_auth="none")
        server = ApiServer(open_api, config=config, registry=new_registry()).start()
        stream.run.on_exit(server.stop)
        self.api_writer = ApiWriter(server.url, count=self.count, rate=self.rate, seed=self.seed)
        stream.run.on_exit(self.api_writer.stop)
        self.api_writer.start()

    def committed_in(self) -> int:
        return self.api_writer.ok if self.api_writer is not None else 0

    def _join_writer(self, stream: SinkStream) -> int:
        assert self.api_writer is not None, "start() first"
        ok = self.api_writer.join(stream.run.remaining())
        if self.api_writer.failed:
            stream.run.report.errors += self.api_writer.failed
            stream.run.note(
                f"{self.api_writer.failed} API writes failed, e.g. {self.api_writer.first_errors}"
            )
        return ok

    def events_in(self, stream: SinkStream, census: TopicCensus) -> int:
        ok = super().events_in(stream, census)
        with postgres_connect(stream.settings, schema=SCHEMA, connect_timeout=5) as conn:
            row = conn.execute(
                sql.SQL("SELECT count(*) FROM outbox WHERE event_type = %s"), (AuditEvent.SUBJECT,)
            ).fetchone()
        in_outbox = int(row[0]) if row else 0
        if in_outbox != ok:
            stream.run.report.errors += 1
            stream.run.note(f"{ok:,} writes answered 2xx, {in_outbox:,} audit events in the outbox")
        changes = topic_census(stream.settings, ENTITY_TOPIC, at_least=ok, timeout_s=60)
        if changes.distinct != ok:
            stream.run.report.errors += 1
            stream.run.note(f"{changes.distinct:,} EntityChanged events reached Kafka, not {ok:,}")
        return ok


def run(ctx: ChaosContext, params: broker_freeze.Params | None = None) -> ScenarioReport:
    """Run ``broker-freeze`` with the reference API as the writer."""
    params = params or SIZES[ctx.size]
    source = ApiSource(
        count=params.stream.events,
        rate=params.stream.rate,
        seed=ctx.rng(f"{NAME}:events").randrange(2**31),
    )
    return broker_freeze.run_with(ctx, NAME, params, source)
