"""The peer bench section (quixstreams' PostgreSQLSink beside the audit sink): what holds
without timing. The peer reads the audit rows as JSON, writes into a table shaped like the
audit table, is checked row by row against the audit sink, and a machine that cannot
install it gets one line saying so. No figure's value is judged here."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from psycopg import sql
from rich.console import Console

from consumers import CONSUMER_MIGRATIONS, RawRecord, Record
from consumers.sinks.audit import AUDIT_TABLE, AuditSink
from devtools.bench import peer
from devtools.bench.harness import Sizes
from producers.synthetic import SyntheticEvents
from runtime import Settings, load_settings
from runtime.clients import postgres_connect
from schemas import AuditEvent
from tests.devtools.bench.test_bench_sections import RecordingContext, check_figures, run_section

_UNREACHABLE_INDEX = ("--isolated", "--index-url", "http://127.0.0.1:9/simple")


def _events(n: int) -> list[AuditEvent]:
    return list(SyntheticEvents(seed=3).take(n, "audit"))  # type: ignore[arg-type]


def _row(event: AuditEvent, partition: int = 0, offset: int = 0) -> tuple[object, ...]:
    return AuditSink.row(Record(RawRecord("t", partition, offset, None, None, [], 0), event))


def test_the_peer_reads_each_audit_row_as_one_flat_json_object() -> None:
    for event in _events(50):
        value = json.loads(peer.peer_json(event))
        row = dict(zip(AUDIT_TABLE.column_names, _row(event), strict=True))
        # Every column but the Kafka coordinates, which the peer adds from the record.
        assert list(value) == [c for c in row if c not in ("kafka_partition", "kafka_offset")]
        assert uuid.UUID(value.pop("event_id")) == row.pop("event_id")
        assert datetime.fromisoformat(value.pop("occurred_at")) == row.pop("occurred_at")
        assert value.pop("details") == row.pop("details").obj  # type: ignore[attr-defined]
        assert value == {c: v for c, v in row.items() if c in value}


@pytest.fixture
def bench(stack_settings: Settings) -> Iterator[RecordingContext]:
    ctx = RecordingContext(
        # Small batches: the tiny backlog still makes several for each side.
        stack_settings.with_overrides(consumer_batch_max_records=200),
        Sizes(quick=True, scale=0.1),
        Console(file=io.StringIO()),
    )
    yield ctx
    ctx.close()


def test_the_peer_table_has_the_audit_tables_columns_key_and_indexes(
    bench: RecordingContext,
) -> None:
    ours = bench.schema("ours", [CONSUMER_MIGRATIONS])
    theirs = peer.peer_schema(bench)
    shape = peer.table_shape(bench, theirs)
    assert shape == peer.table_shape(bench, ours)
    assert shape["primary_key"] == ["event_id", "occurred_at"]
    assert len(shape["indexes"]) == 4, shape["indexes"]  # the key and three indexes
    # ...under a key name of its own: the peer's key check matches constraints by name.
    with postgres_connect(bench.settings) as conn:
        names = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            (f'"{theirs}".audit_events',),
        ).fetchall()
    assert names == [(f"{theirs}_pkey",)]


def test_rows_differing_sees_one_changed_column(bench: RecordingContext) -> None:
    first, second = (bench.schema(p, [CONSUMER_MIGRATIONS]) for p in ("a", "b"))
    rows = [_row(event, 1, i) for i, event in enumerate(_events(20))]
    columns = sql.SQL(", ").join(map(sql.Identifier, AUDIT_TABLE.column_names))
    with postgres_connect(bench.settings, autocommit=True) as conn:
        for schema in (first, second):
            statement = sql.SQL("COPY {}.audit_events ({}) FROM STDIN").format(
                sql.Identifier(schema), columns
            )
            with conn.cursor().copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        assert peer.rows_differing(bench, first, second) == 0
        conn.execute(
            sql.SQL("UPDATE {}.audit_events SET kafka_offset = 99 WHERE kafka_offset = 7").format(
                sql.Identifier(second)
            )
        )
    # The changed row is missing on each side.
    assert peer.rows_differing(bench, first, second) == 2


def test_without_a_package_index_the_section_says_why_in_one_line(tmp_path: Path) -> None:
    out = io.StringIO()
    ctx = RecordingContext(load_settings(), Sizes(quick=True), Console(file=out, width=80))
    venv = peer.PeerVenv(path=tmp_path / "venv", pip_args=_UNREACHABLE_INDEX)
    try:
        [figure] = peer.run_with(ctx, venv)
    finally:
        ctx.close()
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("peer: skipped — quixstreams could not be installed into ")
    assert "is PyPI reachable?" in lines[0]
    assert figure.section == "peer"
    assert figure.note.startswith("skipped: ")
    assert figure.target is None
    assert ctx.names == [], "a skipped section makes no topics, schemas or groups"
    assert not (tmp_path / "venv" / ".installed").exists(), "a failed install is not ready"


def test_the_section_drains_the_same_rows_through_both_sinks(bench: RecordingContext) -> None:
    problem = peer.PeerVenv().ensure()
    if problem is not None:
        pytest.skip(f"the peer cannot be installed here: {problem}")
    figures = check_figures(
        run_section(bench, peer.run),
        "peer",
        {
            "audit sink vs quixstreams PostgreSQLSink, schema_auto_update on",
            "audit sink vs quixstreams PostgreSQLSink, schema_auto_update off",
        },
    )
    for figure in figures.values():
        assert figure.target is not None
        assert figure.target.threshold == 3
        assert "same rows in both tables" in figure.note
        assert figure.baseline_name.startswith("quixstreams 3.28")
