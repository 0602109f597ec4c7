"""``sidestream lag``: how far behind each consumer group is, in records and in time.

One row per group, topic and partition: the position stored in Postgres and the one
committed in Kafka, the end offset (confirmed by reading; the broker's own figure next
to it, as some brokers report it short), the lag, the event-time lag (how long the
oldest pending record has waited) and the group's members. ``--watch`` refreshes every
``--interval`` seconds until Ctrl-C; ``--json`` prints one JSON document (per refresh).
"""

from __future__ import annotations

import json
import threading
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from consumers.ops import GroupInspector, LagReport, TopicReader, measure_lag
from consumers.ops.format import age as _age
from consumers.ops.positions import has_table
from runtime.clients import postgres_connect
from sidestream.context import console, settings
from sidestream.errors import App, safe, schema_typed

app = App(help="Consumer lag per group, topic and partition.")


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render(report: LagReport) -> Group:
    """The report as a table, with the notes it needs."""
    table = Table(
        title=f"consumer lag, schema {report.schema}, {report.taken_at:%Y-%m-%d %H:%M:%S} UTC",
        title_justify="left",
    )
    for column in (
        "group",
        "topic",
        "part",
        "postgres",
        "kafka",
        "end",
        "broker end",
        "lag",
        "event-time lag",
        "members",
    ):
        table.add_column(
            column, justify="left" if column in ("group", "topic", "members") else "right"
        )
    notes = []
    for group in report.groups:
        first = True
        for p in group.partitions:
            table.add_row(
                safe(group.group) if first else "",
                safe(p.topic),
                str(p.partition),
                _cell(p.postgres_offset),
                _cell(p.kafka_offset),
                f"{p.ends.end:,}" + ("" if p.ends.verified else "?"),
                f"{p.ends.reported:,}" + ("*" if p.ends.short else ""),
                f"{p.lag:,}" if p.out_of_range is None else f"[red]{p.out_of_range.where}[/]",
                _age(p.event_time_lag_s(report.taken_at)),
                group.activity.summary() if first else "",
            )
            first = False
        if not group.partitions:
            table.add_row(
                safe(group.group), "-", "", "", "", "", "", "", "", group.activity.summary()
            )
        for topic in group.missing_topics:
            notes.append(f"group {group.group}: topic {topic} no longer exists")
        if group.kafka_error:
            notes.append(f"group {group.group}: Kafka offsets unreadable: {group.kafka_error}")
    for group_id, condition in report.out_of_range:
        notes.append(
            f"{condition.describe(group_id)}: its workers refuse the partition (or reset "
            f"it, as SIDESTREAM_CONSUMER_OFFSET_OUT_OF_RANGE says); to re-read what the "
            f"log holds: {condition.fix_command(group_id)}"
        )
    if report.short_watermarks:
        notes.append(
            "* the broker reports this end offset short (the high watermark at the last "
            "batch's start); 'end' was confirmed by reading and the lag uses it"
        )
    if not report.groups:
        notes.append(f"no consumer groups have offsets in schema {report.schema}")
    return Group(table, *(Text(note, style="yellow") for note in notes))


@app.callback(invoke_without_command=True)
def lag(
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="Only this group (repeatable; default: every group)."),
    ] = None,
    schema: Annotated[
        str | None, schema_typed("Schema of consumer_offsets (default: the configured one).")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option(min=1.0, max=300.0, help="Seconds between refreshes (--watch).")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Lag of every consumer group (or --group) in records and in event time."""
    config = settings()
    target = schema or config.postgres_schema
    stop = threading.Event()
    with (
        postgres_connect(config, autocommit=True, connect_timeout=10) as conn,
        TopicReader.from_settings(config) as reader,
    ):
        if not has_table(conn, target, "consumer_offsets"):
            raise ValueError(
                f"no consumer_offsets table in schema {target}: run `sidestream db migrate`"
            )
        groups = GroupInspector.from_settings(config)

        def measure() -> LagReport:
            return measure_lag(
                conn=conn, schema=target, reader=reader, groups=groups, group_ids=group
            )

        if not watch:
            report = measure()
            if as_json:
                console.print_json(json.dumps(report.to_dict()))
            else:
                console.print(render(report))
            return
        try:
            if as_json:
                while not stop.is_set():
                    print(json.dumps(measure().to_dict()), flush=True)
                    stop.wait(interval)
            else:
                with Live(render(measure()), console=console, auto_refresh=False) as live:
                    while not stop.wait(interval):
                        live.update(render(measure()), refresh=True)
        except KeyboardInterrupt:
            stop.set()
