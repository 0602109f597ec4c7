"""``sidestream replay``: move a consumer group back and, if asked, re-run its sink.

Three things, one command:

- reset a group's offsets (Postgres and Kafka together) to a time, explicit offsets or
  the beginning — refused while the group has live members unless ``--force``;
- ``--sink NAME``: then run that sink for the group until it has re-read everything up
  to the end offsets captured at the start, with a progress bar (``--rate`` caps it);
- ``--target-schema S``: replay into a shadow schema (migrated first) under a group of
  its own, leaving live tables alone.

``--dry-run`` prints the plan and changes nothing. Ctrl-C drains and stops; the offsets
are stored with the rows, so ``--resume`` continues where it stopped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from consumers import SINKS, WorkerOptions
from consumers.ops import (
    EndOffsets,
    FromTime,
    GroupInspector,
    ReplayPlan,
    ReplayProgress,
    ReplayRunner,
    StartAt,
    ToOffset,
    TopicReader,
    park_other_partitions,
    parse_time,
    plan_replay,
    prepare_shadow_schema,
    replay_target,
    reset_offsets,
    resume_points,
    start_at,
)
from consumers.ops.positions import has_table, stored_offsets
from runtime import Settings
from runtime.clients import postgres_connect
from schemas.topics import check_topic_name
from sidestream.context import console, err_console, settings
from sidestream.errors import App, UsageError, checked, safe, schema_typed, warn

app = App(help="Replay a consumer group: reset offsets, re-run a sink, fill a shadow.")

Key = tuple[str, int]


def _partitions(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        chosen = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        chosen = [-1]
    if not chosen or chosen[0] < 0:
        raise ValueError(f"{text!r}: expected partition numbers, e.g. 0,2,5")
    return chosen


def _time(text: str) -> object:
    return parse_time(text, now=datetime.now(UTC))


def _sink(name: str) -> str:
    if name not in SINKS:
        raise ValueError(f"unknown sink {name!r}; choose one of {', '.join(sorted(SINKS))}")
    return name


def _start_at(from_time: str | None, to_offset: str | None, from_beginning: bool) -> StartAt:
    return start_at(from_time=from_time, to_offset=to_offset, from_beginning=from_beginning)


def _cell(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _end_cells(ends: EndOffsets) -> tuple[str, str]:
    read = f"{ends.end:,}" + ("" if ends.verified else " (unconfirmed)")
    broker = f"{ends.reported:,}" + (" [yellow](short)[/]" if ends.short else "")
    return broker, read


def _short_note(short: bool) -> None:
    if short:
        console.print(
            "[yellow]note:[/] the broker reports some end offsets short of the real end "
            "(some brokers report the high watermark at the last batch's start); the "
            "'end' column was confirmed by reading to the end, and the counts use it."
        )


def _print_plan(plan: ReplayPlan, *, dry_run: bool) -> None:
    title = (
        f"{'dry run: ' if dry_run else ''}replay {safe(plan.group)} on {safe(plan.topic)} "
        f"from {safe(plan.start)}"
    )
    table = Table(title=title, title_justify="left")
    for column in (
        "partition",
        "postgres",
        "kafka",
        "→ new",
        "end",
        "broker end",
        "re-read",
        "how",
    ):
        table.add_column(column, justify="left" if column in ("how",) else "right")
    for p in plan.partitions:
        broker_end, end = _end_cells(p.ends)
        table.add_row(
            str(p.partition),
            _cell(p.postgres_offset),
            _cell(p.kafka_offset),
            f"{p.new_offset:,}",
            end,
            broker_end,
            f"{p.reprocess:,}",
            p.method,
        )
    console.print(table)
    console.print(
        f"{plan.reprocess:,} records to re-read; offsets in schema {plan.schema}; "
        f"group {safe(plan.activity.detail)} (broker state {safe(plan.activity.state)})",
        highlight=False,
    )
    _short_note(plan.short_watermarks)


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rec/s" if speed else "", style="progress.data.speed")


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM set the event (the run drains and stops) instead of raising."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        err_console.print(
            f"{signal.Signals(signum).name}: finishing the batch in hand and stopping"
        )
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(
    config: Settings,
    *,
    reader: TopicReader,
    options: WorkerOptions,
    starts: Mapping[Key, int],
    ends: Mapping[Key, int],
    rate: float | None,
    resume_hint: str,
) -> None:
    runner = ReplayRunner(
        settings=config, options=options, starts=starts, ends=ends, reader=reader, rate=rate
    )
    columns = (
        TextColumn(
            f"[bold]{safe(options.sink)}[/] → {safe(options.schema or config.postgres_schema)}"
        ),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with _stop_on_signals() as stop, Progress(*columns, console=console) as progress:
        task = progress.add_task("replay", total=runner.total or 1)

        def show(update: ReplayProgress) -> None:
            progress.update(task, completed=update.done if runner.total else 1)

        outcome = runner.run(stop=stop, on_progress=show)
    if outcome.completed:
        console.print(
            f"[green]replayed[/] {outcome.done:,} records of group {safe(outcome.group)} "
            f"in {outcome.seconds:.1f}s",
            highlight=False,
        )
        return
    err_console.print(
        f"stopped after {outcome.done:,} of {outcome.total:,} records; offsets are stored — "
        f"continue with: {safe(resume_hint)}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code=1)


@app.callback(invoke_without_command=True)
def replay(
    group: Annotated[
        str | None,
        typer.Option(
            help="Group (default: the sink's; for a shadow: sidestream.replay.SINK.SCHEMA)."
        ),
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option(
            help="Topic (default: the sink's, from topics.yaml).",
            callback=checked(check_topic_name),
        ),
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated partitions (default: all).", callback=checked(_partitions)
        ),
    ] = None,
    from_time: Annotated[
        str | None,
        typer.Option(
            help="Replay records stamped at or after this: ISO 8601 or 2h, 1h30m, 7d.",
            callback=checked(_time),
        ),
    ] = None,
    to_offset: Annotated[
        str | None,
        typer.Option(
            help="Replay from offset N (every partition) or P:N,P:N.",
            callback=checked(ToOffset.parse),
        ),
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Replay everything still in the topic.")
    ] = False,
    sink: Annotated[
        str | None,
        typer.Option(
            help=f"Then run this sink ({', '.join(sorted(SINKS))}) up to today's end.",
            callback=checked(_sink),
        ),
    ] = None,
    target_schema: Annotated[
        str | None,
        schema_typed("Replay into this shadow schema (migrated first); needs --sink."),
    ] = None,
    schema: Annotated[
        str | None,
        schema_typed("Schema of the live tables and offsets (default: the configured one)."),
    ] = None,
    rate: Annotated[
        float | None, typer.Option(min=0.001, help="At most this many records per second.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue an interrupted run from its stored offsets."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Move the Postgres offsets even if the group may have live members."
        ),
    ] = False,
) -> None:
    """Reset a consumer group to a time, an offset or the beginning; optionally re-run it."""
    config = settings()
    live_schema = schema or config.postgres_schema
    try:
        # Options that contradict each other are usage errors (exit 2), like a bad value.
        if (target_schema or rate is not None) and sink is None:
            raise ValueError("--target-schema and --rate need --sink (the sink to run)")
        if target_schema is not None and target_schema == live_schema:
            raise ValueError("the shadow schema must differ from the live one")
        if sink is not None:
            topic, group = replay_target(sink, group=group, topic=topic, shadow=target_schema)
        if topic is None or group is None:
            raise ValueError("--group and --topic are required without --sink")
        if resume and (from_time or to_offset or from_beginning):
            raise ValueError("--resume continues from the stored offsets: give no start point")
        if resume and sink is None:
            raise ValueError("--resume needs --sink (the sink to run)")
        start = None if resume else _start_at(from_time, to_offset, from_beginning)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    offsets_schema = target_schema or live_schema
    wanted = _partitions(partitions)

    with (
        postgres_connect(config, autocommit=True, connect_timeout=10) as conn,
        TopicReader.from_settings(config) as reader,
    ):
        groups = GroupInspector.from_settings(config)
        shadow_ready = target_schema is None or has_table(conn, offsets_schema, "consumer_offsets")
        if target_schema is not None and not dry_run and not resume:
            for name in prepare_shadow_schema(conn, target_schema):
                console.print(f"shadow schema {safe(target_schema)}: applied {safe(name)}")
            shadow_ready = True
        elif not shadow_ready and not resume:
            console.print(
                f"shadow schema {target_schema} does not exist yet: it would be created "
                "and migrated",
                highlight=False,
            )

        options = WorkerOptions(
            sink=sink or "",
            group_id=group,
            topics=(topic,),
            schema=target_schema or schema,
        )
        resume_hint = (
            f"sidestream replay --sink {sink} --group {group} --topic {topic}"
            + (f" --target-schema {target_schema}" if target_schema else "")
            + (f" --schema {schema}" if schema else "")
            + (f" --partitions {partitions}" if partitions else "")
            + (f" --rate {rate:g}" if rate else "")
            + " --resume"
        )
        if start is None:
            stored = stored_offsets(conn, offsets_schema, group, topic) if shadow_ready else {}
            if not any(offset is not None for offset in stored.values()):
                raise ValueError(
                    f"group {group} has no offsets for {topic} in schema {offsets_schema}: "
                    "nothing to resume; start a replay with --from-time, --to-offset or "
                    "--from-beginning"
                )
            starts, ends = resume_points(
                conn=conn,
                schema=offsets_schema,
                reader=reader,
                group=group,
                topic=topic,
                partitions=wanted,
            )
            _print_resume(group, starts, ends)
            if dry_run:
                return
            _run(
                config,
                reader=reader,
                options=options,
                starts=starts,
                ends={key: e.end for key, e in ends.items()},
                rate=rate,
                resume_hint=resume_hint,
            )
            return

        plan = plan_replay(
            conn=conn,
            # An unmigrated shadow holds no offsets: plan from nothing (the live schema
            # has no rows for the shadow group either).
            schema=offsets_schema if shadow_ready else live_schema,
            reader=reader,
            groups=groups,
            group=group,
            topic=topic,
            start=start,
            partitions=wanted,
        )
        _print_plan(plan, dry_run=dry_run)
        for line in _plan_warnings(plan, start, shadow=target_schema is not None):
            warn(line)
        if dry_run:
            return
        result = reset_offsets(plan, conn=conn, groups=groups, force=force)
        if target_schema is not None and wanted is not None:
            others = park_other_partitions(
                plan, conn=conn, reader=reader, groups=groups, force=force
            )
            if others:
                console.print(
                    f"partitions {others} of the shadow group start at their end (not replayed)"
                )
        console.print(
            f"[green]reset[/] {len(plan.partitions)} partition(s) of {safe(group)} in Postgres"
            + (" and Kafka" if result.kafka_committed else ""),
            highlight=False,
        )
        if result.kafka_note:
            warn(result.kafka_note)
        if sink is None:
            console.print("restart the group's workers to re-read from the new offsets")
            return
        _run(
            config,
            reader=reader,
            options=options,
            starts=plan.new_offsets,
            ends=plan.ends,
            rate=rate,
            resume_hint=resume_hint,
        )


def _plan_warnings(
    plan: ReplayPlan, start: StartAt, *, shadow: bool, now: datetime | None = None
) -> list[str]:
    """What looks like a mistake in a plan: a group with no stored offsets anywhere (a
    typo makes a new group), or a start time in the future (nothing would be re-read)."""
    warnings = []
    if (
        not shadow
        and plan.partitions
        and all(p.postgres_offset is None and p.kafka_offset is None for p in plan.partitions)
    ):
        warnings.append(
            f"group {plan.group} has no stored offsets for {plan.topic} (schema {plan.schema}, "
            "nor committed in Kafka): is the group name right? `sidestream lag` lists groups"
        )
    moment = now or datetime.now(UTC)
    if isinstance(start, FromTime) and start.when > moment:
        warnings.append(
            f"--from-time {start.when.isoformat()} is in the future (now "
            f"{moment.isoformat(timespec='seconds')}): nothing would be re-read, and the group "
            "would move to the end of each partition, past records it has not read yet"
        )
    return warnings


def _print_resume(group: str, starts: Mapping[Key, int], ends: Mapping[Key, EndOffsets]) -> None:
    table = Table(title=f"resume {safe(group)}", title_justify="left")
    for column in ("partition", "stored", "end", "broker end", "left"):
        table.add_column(column, justify="right")
    for key in sorted(ends):
        broker_end, end = _end_cells(ends[key])
        table.add_row(
            str(key[1]),
            f"{starts[key]:,}",
            end,
            broker_end,
            f"{max(0, ends[key].end - starts[key]):,}",
        )
    console.print(table)
    _short_note(any(e.short for e in ends.values()))
