"""Session-scoped real servers and per-test isolation by unique names.

The servers come from the project's own launcher (``devtools.localstack``), or from
testcontainers when ``SIDESTREAM_TEST_STACK=docker`` (or ``auto`` with an engine). A
session reuses a stack that is already up (``make up``) and stops only what it started.
Every test gets fresh topic, group, schema and key-prefix names, and cleans them up.

Under pytest-xdist (``make test`` runs ``-n 2``) the worker processes share one local
stack: the first worker that needs it starts it under a file lock, and the controller
stops it once every worker finished (see :class:`_OneStackForAllWorkers`).
"""

from __future__ import annotations

import contextlib
import fcntl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported, not in __all__
from psycopg import sql

from devtools.localstack import LocalStack, docker_available
from runtime import ConfigError, Settings, load_settings
from runtime.clients import kafka_admin, postgres_connect, redis_client
from runtime.ports import refused_port

NameFactory = Callable[[str], str]


def _docker_settings(base: Settings, stack: contextlib.ExitStack) -> Settings:
    """Start Apache Kafka, Postgres and Redis containers and point settings at them."""
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer
    from testcontainers.redis import RedisContainer

    kafka = stack.enter_context(KafkaContainer("apache/kafka:3.9.1").with_kraft())
    postgres = stack.enter_context(
        PostgresContainer(
            "postgres:17", username="postgres", password="postgres", dbname="sidestream"
        )
    )
    cache = stack.enter_context(RedisContainer("valkey/valkey:8"))
    pg_host, pg_port = postgres.get_container_host_ip(), postgres.get_exposed_port(5432)
    return base.with_overrides(
        kafka_bootstrap_servers=kafka.get_bootstrap_server(),
        postgres_dsn=f"postgresql://postgres:postgres@{pg_host}:{pg_port}/sidestream",
        redis_url=f"redis://{cache.get_container_host_ip()}:{cache.get_exposed_port(6379)}/0",
    )


#: ``workerinput`` key: the id of the xdist run, known to the controller and its workers.
_RUN_KEY = "sidestream_stack_run"


def _stack_files(settings: Settings) -> tuple[Path, Path]:
    """The lock that serialises starting the local stack, and the file naming the xdist
    run that started it (the controller stops a stack only its own workers started)."""
    stack_dir = Path(settings.stack_dir).resolve()
    stack_dir.mkdir(parents=True, exist_ok=True)
    return stack_dir / "test-session.lock", stack_dir / "test-session.started-by"


@contextlib.contextmanager
def _stack_lock(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock on the stack dir: two workers checking "is it up?" at once
    would both start servers on the same ports. The holder's wait is bounded by the
    servers' own start timeouts; the lock goes with the process if it dies."""
    lock_path, _ = _stack_files(settings)
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class _OneStackForAllWorkers:
    """Controller-side plugin of an xdist run: hands the workers a run id, and stops the
    local stack at the end if one of them started it. Stopping it in a worker's session
    teardown would pull it from under the workers still running."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[_RUN_KEY] = self.run_id

    def pytest_sessionfinish(self) -> None:
        try:
            settings = load_settings()
        except ConfigError:
            return  # no worker could have started a stack with these settings either
        _, started_by = _stack_files(settings)
        with _stack_lock(settings):
            if started_by.exists() and started_by.read_text().strip() == self.run_id:
                LocalStack(settings).down()
                started_by.unlink()


def pytest_configure(config: pytest.Config) -> None:
    # Only the controller of a run with workers (`-n 2`); `-n 0` runs the tests in-process.
    option = config.option
    with_workers = getattr(option, "numprocesses", None) or getattr(option, "tx", None)
    if with_workers and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_OneStackForAllWorkers(), "sidestream-one-stack")


@pytest.fixture(scope="session")
def stack_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings pointing at running Kafka, Postgres and Redis for the whole session."""
    base = load_settings()
    use_docker = base.test_stack == "docker" or (base.test_stack == "auto" and docker_available())
    with contextlib.ExitStack() as cleanup:
        if use_docker:
            # Under xdist every worker gets containers of its own.
            yield _docker_settings(base, cleanup)
            return
        local = LocalStack(base)
        run_id: str | None = getattr(request.config, "workerinput", {}).get(_RUN_KEY)
        with _stack_lock(base):
            started_here = not local.is_up()
            local.up()
            if started_here and run_id is not None:
                _stack_files(base)[1].write_text(f"{run_id}\n")
        if started_here and run_id is None:
            cleanup.callback(local.down)
        yield base


@pytest.fixture
def nowhere_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test: bound, never
    listening, so no other process can take it meanwhile (a free port picked and closed
    could start answering)."""
    with refused_port() as port:
        yield port


@pytest.fixture
def unique() -> NameFactory:
    """Make names no other test (or earlier run) uses: ``unique("audit")`` → ``audit_3f9a…``."""
    token = uuid.uuid4().hex[:10]
    return lambda prefix: f"{prefix}_{token}"


@pytest.fixture(scope="session")
def admin(stack_settings: Settings) -> AdminClient:
    return kafka_admin(stack_settings)


@pytest.fixture
def make_topic(admin: AdminClient, unique: NameFactory) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics; they are deleted after the test (the local broker
    keeps every message in memory, so leaving topics behind grows it)."""
    created: list[str] = []

    def create(
        prefix: str = "topic", partitions: int = 3, *, name: str | None = None, **config: str
    ) -> str:
        name = name or f"{unique(prefix)}_{len(created)}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
        )
        futures[name].result(timeout=15)
        created.append(name)
        return name

    yield create
    if created:
        for future in admin.delete_topics(created, operation_timeout=15).values():
            with contextlib.suppress(Exception):
                future.result(timeout=15)


@pytest.fixture
def topic(make_topic: Callable[..., str]) -> str:
    """One fresh three-partition topic."""
    return make_topic()


@pytest.fixture
def pg_conn(stack_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    with postgres_connect(stack_settings, autocommit=True) as conn:
        yield conn


@pytest.fixture
def pg_schema(pg_conn: psycopg.Connection[Any], unique: NameFactory) -> Iterator[str]:
    """A fresh Postgres schema, dropped (with everything in it) after the test."""
    name = unique("t")
    pg_conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    pg_conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def redis_conn(stack_settings: Settings) -> Iterator[redis.Redis]:
    client = redis_client(stack_settings)
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_conn: redis.Redis, unique: NameFactory) -> Iterator[str]:
    """A Redis key prefix of the test's own; its keys are deleted afterwards."""
    prefix = unique("test") + ":"
    yield prefix
    keys = list(redis_conn.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_conn.delete(*keys)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Any test that uses the real servers is an integration test, marked or not.
    for item in items:
        if "stack_settings" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
