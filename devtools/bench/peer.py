"""Peer: the audit sink against a mainstream Python streaming library's Postgres sink.

Both drain the same N audit events, already in Kafka before anything is timed, into the
same table (the audit migration, each in a scratch schema of its own: same columns, same
primary key, same three indexes, same monthly partitions):

- ours: one ``sidestream worker run audit`` process, Avro values, COPY into the table;
- the peer: quixstreams' ``PostgreSQLSink`` (psycopg2 ``execute_values``) in a process of
  its own virtualenv, JSON values (one flat object per event, keyed by column), from its
  own topic with the same keys and partition count.

Each side's rate counts from its first committed rows to its last, so neither pays for
its consumer-group join. Afterwards the two tables are compared row by row (every column
but ``ingested_at``): a figure of a peer that wrote other rows would mean nothing.

quixstreams pins confluent-kafka and pydantic versions that would fight ours, so it never
enters ``requirements.lock``: it is installed on first use, hash-checked, from
``devtools/bench/peer-requirements.lock`` into ``.venv-peer/`` (``make lock`` re-pins it).
Without a package index the section prints one line saying why it is skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from consumers import CONSUMER_MIGRATIONS, RawRecord, Record, WorkerOptions
from consumers.sinks.audit import AUDIT_TABLE, AuditSink
from devtools.bench.harness import BenchContext, Figure, Target, median, stop_process
from devtools.bench.sink import measure_until_done, produce_encoded, worker_process
from producers.synthetic import SyntheticEvents
from runtime.clients import consumer_config, postgres_connect
from schemas import AuditEvent, EventSerializer

__all__ = [
    "PEER_COLUMNS",
    "PEER_LOCK",
    "PeerRun",
    "PeerVenv",
    "peer_json",
    "peer_schema",
    "rows_differing",
    "run",
    "run_with",
    "table_shape",
]

SECTION = "peer"

_HERE = Path(__file__).resolve().parent
PEER_LOCK = _HERE / "peer-requirements.lock"
"""The peer's hash-pinned requirements (``make lock`` writes it)."""
_CHILD = _HERE / "peer_quix_child.py"
_DEFAULT_VENV = _HERE.parents[1] / ".venv-peer"

#: The columns the peer gets from the JSON value; it adds the Kafka coordinates itself.
PEER_COLUMNS = tuple(
    name for name in AUDIT_TABLE.column_names if name not in ("kafka_partition", "kafka_offset")
)
_PRIMARY_KEY = ("event_id", "occurred_at")

#: Settings of the peer's consumer that only adapt it to the local broker, taken from
#: ours: tansu holds a fetch for all of fetch.wait.max.ms even with data waiting, and a
#: group join takes about half of session.timeout.ms.
_LOCAL_BROKER_KEYS = ("fetch.wait.max.ms", "session.timeout.ms", "heartbeat.interval.ms")

#: Bounds: building the virtualenv (a first install downloads ~40 wheels), and one run.
_INSTALL_TIMEOUT_S = 900.0
_RUN_TIMEOUT_S = 900.0

#: Rounds of a full run (each: ours, the peer with and without schema_auto_update).
_ROUNDS = 3


def _pinned_version(lock: Path) -> str:
    """quixstreams' version in ``lock`` (the scoreboard names it)."""
    match = re.search(r"^quixstreams==(\S+)", lock.read_text(), re.MULTILINE)
    return match.group(1) if match else "?"


_TARGET_RATIO = 3.0
"""Issue 16: this project "should lead by several times"."""


def peer_json(event: AuditEvent) -> bytes:
    """The peer's Kafka value for ``event``: the audit row's columns (but the Kafka
    coordinates) as one flat JSON object, in the form Postgres reads back the same."""
    row = AuditSink.row(Record(RawRecord("", 0, 0, None, None, [], 0), event))
    values = dict(zip(AUDIT_TABLE.column_names, row, strict=True))
    return json.dumps({name: _jsonable(values[name]) for name in PEER_COLUMNS}).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Jsonb):
        return value.obj
    return value


@dataclass(frozen=True)
class PeerVenv:
    """The peer's own virtualenv, built from ``lock`` on first use.

    ``pip_args`` go to ``pip install`` (tests point ``--index-url`` somewhere unreachable).
    A stamp holding the lock's hash marks a finished install; a changed lock reinstalls.
    """

    path: Path = _DEFAULT_VENV
    lock: Path = PEER_LOCK
    pip_args: tuple[str, ...] = ()

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def _stamp(self) -> Path:
        return self.path / ".installed"

    def _digest(self) -> str:
        return hashlib.sha256(self.lock.read_bytes()).hexdigest()

    def ensure(self) -> str | None:
        """Build or reuse the virtualenv; None when ready, else one line saying why not."""
        stamp, digest = self._stamp(), self._digest()
        if stamp.exists() and stamp.read_text().strip() == digest and self.python.exists():
            return None
        pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(self.path)],
            [*pip, "--require-hashes", "-r", str(self.lock), *self.pip_args],
        ]
        for argv in steps:
            try:
                done = subprocess.run(
                    argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                return f"installing the peer timed out after {_INSTALL_TIMEOUT_S:.0f} s"
            if done.returncode != 0:
                hint = "; is PyPI reachable?" if argv[2] == "pip" else ""
                return f"{argv[2]} failed: {_last_error(done.stderr)}{hint}"
        stamp.write_text(digest)
        return None


def _last_error(stderr: str) -> str:
    """pip's last ERROR line (else its last line): the reason, not the retries before it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


@dataclass
class PeerRun:
    """What the peer process reported about one drain."""

    rows: int
    first_rows: int
    first_at: float
    last_at: float
    flushes: int

    @property
    def rate(self) -> float:
        """Rows/s from the end of its first flush to the end of its last."""
        return (self.rows - self.first_rows) / max(self.last_at - self.first_at, 1e-9)


@dataclass
class _Plan:
    """The shared inputs of one comparison."""

    total: int
    batch: int
    keys: list[bytes] = field(default_factory=list)
    avro: list[bytes] = field(default_factory=list)
    json: list[bytes] = field(default_factory=list)


def _plan(ctx: BenchContext, total: int, ours_topic: str) -> _Plan:
    events: list[AuditEvent] = list(SyntheticEvents(seed=ctx.seed).take(total, "audit"))  # type: ignore[arg-type]
    serializer = EventSerializer()
    plan = _Plan(total, ctx.settings.consumer_batch_max_records)
    plan.keys = [event.key for event in events]
    plan.avro = [serializer.serialize(event, ours_topic) for event in events]
    plan.json = [peer_json(event) for event in events]
    return plan


def _ours(ctx: BenchContext, topic: str, total: int) -> tuple[str, float]:
    """(schema, rows/s) of one audit sink worker process over the backlog in ``topic``."""
    schema = ctx.schema("peer_ours", [CONSUMER_MIGRATIONS])
    options = WorkerOptions("audit", group_id=ctx.name("g"), topics=(topic,), schema=schema)
    # The batch size the peer gets too (its commit_every): a test's smaller one included.
    batch = {"SIDESTREAM_CONSUMER_BATCH_MAX_RECORDS": str(ctx.settings.consumer_batch_max_records)}
    process = worker_process(ctx.settings, options, extra_env=batch)
    try:
        _join, rate = measure_until_done(ctx, schema, total, "audit sink worker process")
    finally:
        stop_process(process)
    return schema, rate


def _peer(
    ctx: BenchContext, venv: PeerVenv, topic: str, plan: _Plan, *, auto_update: bool
) -> tuple[str, PeerRun]:
    """(schema, report) of the quixstreams peer over the backlog in ``topic``."""
    schema = peer_schema(ctx)
    dsn = conninfo_to_dict(ctx.settings.postgres_dsn.get_secret_value())
    local = consumer_config(ctx.settings, "unused")
    kafka = {key: local[key] for key in _LOCAL_BROKER_KEYS if key in local}
    label = f"quixstreams PostgreSQLSink (schema_auto_update={'on' if auto_update else 'off'})"
    with tempfile.TemporaryDirectory(prefix="peer-state-") as state:
        argv = [str(venv.python), str(_CHILD), "--bootstrap", ctx.settings.kafka_bootstrap_servers]
        argv += ["--topic", topic, "--group", ctx.name("g"), "--schema", schema]
        argv += ["--host", str(dsn.get("host", "127.0.0.1")), "--port", str(dsn.get("port", 5432))]
        argv += ["--dbname", str(dsn.get("dbname", "")), "--user", str(dsn.get("user", ""))]
        argv += ["--table", AUDIT_TABLE.name, "--primary-key", ",".join(_PRIMARY_KEY)]
        argv += ["--rows", str(plan.total), "--commit-every", str(plan.batch)]
        argv += ["--schema-auto-update", "on" if auto_update else "off"]
        argv += ["--consumer-config", json.dumps(kafka), "--state-dir", state]
        process = ctx.spawn(
            argv,
            # The password travels in the environment, never in the process list.
            extra_env={"BENCH_PEER_PGPASSWORD": str(dsn.get("password") or "")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with ctx.console.status(f"{label}: {plan.total:,} rows"):
            try:
                out, err = process.communicate(timeout=_RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                stop_process(process)
                raise RuntimeError(
                    f"peer: {label} did not finish in {_RUN_TIMEOUT_S:.0f} s"
                ) from None
    report = out.strip().splitlines()[-1] if out.strip() else ""
    if process.returncode != 0 or not report.startswith("{"):
        raise RuntimeError(f"peer: {label} exited {process.returncode}: {_last_error(err)}")
    data = json.loads(report)
    if data["first_at"] is None:
        raise RuntimeError(f"peer: {label} wrote no rows")
    return schema, PeerRun(**data)


def peer_schema(ctx: BenchContext) -> str:
    """A scratch schema with the peer's table: the audit migration's ``audit_events``
    (same columns, primary key, indexes and partitions as the audit sink's), its primary
    key renamed (see below)."""
    schema = ctx.schema("peer_quix", [CONSUMER_MIGRATIONS])
    _rename_primary_key(ctx, schema)
    return schema


def _rename_primary_key(ctx: BenchContext, schema: str) -> None:
    """Give the table's primary key a name no other schema uses.

    With ``schema_auto_update`` on, the peer checks the table's primary key before every
    write with a join of ``information_schema`` views on the constraint name alone, so
    the same table in another schema (the audit sink's, right beside it) doubles every
    key column and it refuses to write (``PostgresSQLSinkInvalidPK``). Renaming changes
    the name only: same columns, same index.
    """
    table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(AUDIT_TABLE.name))
    with postgres_connect(ctx.settings, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                table,
                sql.Identifier(f"{AUDIT_TABLE.name}_pkey"),
                sql.Identifier(f"{schema}_pkey"),
            )
        )


_COMPARED = AUDIT_TABLE.column_names


def rows_differing(ctx: BenchContext, first: str, second: str) -> int:
    """Rows of ``audit_events`` in schema ``first`` or ``second`` but not both (every
    column but ``ingested_at``, which is the moment of writing)."""
    columns = sql.SQL(", ").join(map(sql.Identifier, _COMPARED))

    def table(schema: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(AUDIT_TABLE.name))

    query = sql.SQL(
        "SELECT count(*) FROM ((SELECT {c} FROM {a} EXCEPT ALL SELECT {c} FROM {b})"
        " UNION ALL (SELECT {c} FROM {b} EXCEPT ALL SELECT {c} FROM {a})) AS d"
    ).format(c=columns, a=table(first), b=table(second))
    with postgres_connect(ctx.settings) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def table_shape(ctx: BenchContext, schema: str, table: str = AUDIT_TABLE.name) -> dict[str, Any]:
    """Columns (name, type, not null), primary key and index definitions (schema name
    stripped) of ``schema.table``: what makes two tables cost the same to insert into."""
    with postgres_connect(ctx.settings) as conn:
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'"{schema}"."{table}"',),
        ).fetchall()
        key = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = %s::regclass AND i.indisprimary"
            " ORDER BY array_position(i.indkey, a.attnum)",
            (f'"{schema}"."{table}"',),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (schema, table),
        ).fetchall()
    return {
        "columns": [tuple(column) for column in columns],
        "primary_key": [name for (name,) in key],
        "indexes": sorted(_anonymous(definition, schema) for (definition,) in indexes),
    }


def _anonymous(definition: str, schema: str) -> str:
    """An index definition without its name and schema: ``CREATE INDEX ON t USING ...``."""
    unqualified = definition.replace(f'"{schema}".', "").replace(f"{schema}.", "")
    return re.sub(r"^(CREATE (?:UNIQUE )?INDEX) \S+ ON", r"\1 ON", unqualified)


def _skipped(reason: str) -> list[Figure]:
    return [
        Figure(
            SECTION,
            "audit sink vs quixstreams PostgreSQLSink",
            0.0,
            "rows/s",
            note=f"skipped: {reason}",
        )
    ]


def run(ctx: BenchContext) -> list[Figure]:
    return run_with(ctx, PeerVenv())


def run_with(ctx: BenchContext, venv: PeerVenv) -> list[Figure]:
    """The section with the peer's virtualenv at ``venv`` (tests pass their own)."""
    with ctx.console.status("peer: preparing quixstreams in its own virtualenv"):
        problem = venv.ensure()
    if problem is not None:
        reason = f"quixstreams could not be installed into {venv.path} ({problem})"
        ctx.console.print(f"peer: skipped — {reason}", soft_wrap=True, markup=False)
        return _skipped(reason)
    total = ctx.sizes.pick(20_000, 100_000)
    ours_topic, peer_topic = ctx.topic("peer_ours"), ctx.topic("peer_quix")
    plan = _plan(ctx, total, ours_topic)
    produce_encoded(ctx, ours_topic, list(zip(plan.keys, plan.avro, strict=True)))
    produce_encoded(ctx, peer_topic, list(zip(plan.keys, plan.json, strict=True)))
    # Alternating rounds over the same backlogs (a fresh group and table each time): a
    # shared machine's drift then hits every side alike; each side's median is reported.
    rates: dict[str, list[float]] = {"ours": [], "on": [], "off": []}
    flushes = 0
    for _ in range(ctx.sizes.pick(1, _ROUNDS)):
        ours_schema, rate = _ours(ctx, ours_topic, total)
        rates["ours"].append(rate)
        for auto_update in (True, False):
            schema, report = _peer(ctx, venv, peer_topic, plan, auto_update=auto_update)
            rates["on" if auto_update else "off"].append(report.rate)
            flushes = report.flushes
            differing = rows_differing(ctx, ours_schema, schema)
            if differing:
                raise RuntimeError(
                    f"peer: the peer's table differs from the audit sink's in {differing} "
                    "rows; its rate would not compare like with like"
                )
    ours, version = median(rates["ours"]), _pinned_version(venv.lock)
    note = (
        f"n={total:,}, batch/commit_every={plan.batch} ({flushes} peer checkpoints), same rows "
        f"in both tables; median of rounds, ours {_listed(rates['ours'])}"
    )
    return [
        Figure(
            SECTION,
            f"audit sink vs quixstreams PostgreSQLSink, schema_auto_update {setting}",
            ours,
            "rows/s",
            median(rates[setting]),
            f"quixstreams {version}, {'its default' if setting == 'on' else 'table as is'}",
            Target(">=", _TARGET_RATIO),
            note=f"{note}, peer {_listed(rates[setting])}",
        )
        for setting in ("on", "off")
    ]


def _listed(rates: Sequence[float]) -> str:
    return " / ".join(f"{rate:,.0f}" for rate in rates)
