"""``sidestream dlq show|redrive``: look at a dead-letter topic, then send records back.

``show`` groups ``<topic>.dlq`` by error class (counts, first/last time, samples, how
many were redriven or sit at the redrive cap). ``redrive`` sends the chosen records
(by error class, time range or offsets) back to their source topic with their original
key and headers plus ``sidestream.redrive.count``; each dead letter is redriven at most
once (progress is kept in ``dlq_redrives``), records at ``--max-redrives`` are skipped
and listed. ``--dry-run`` shows what would be sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from consumers import dead_letter_topic
from consumers.ops import (
    DeadLetter,
    LetterFilter,
    OffsetRange,
    TopicReader,
    dead_letter_summary,
    parse_time,
    redrive_dead_letters,
)
from runtime.clients import kafka_producer, postgres_connect
from schemas.topics import check_topic_name
from sidestream.context import console, err_console, settings
from sidestream.errors import App, checked, safe, schema_typed

app = App(help="Dead-letter topics: show them, redrive fixed records.")


def _time(text: str) -> object:
    return parse_time(text, now=datetime.now(UTC))


_TOPIC = checked(check_topic_name)
TopicArg = Annotated[
    str,
    typer.Argument(help="Source topic (its dead letters: TOPIC.dlq).", callback=_TOPIC),
]
DlqOpt = Annotated[
    str | None,
    typer.Option("--dlq-topic", help="Dead-letter topic (default: TOPIC.dlq).", callback=_TOPIC),
]
ClassOpt = Annotated[
    list[str] | None, typer.Option("--error-class", help="Only this error class (repeatable).")
]
SinceOpt = Annotated[
    str | None,
    typer.Option(
        help="Dead-lettered at or after (ISO 8601 or 2h, 1d, ...).", callback=checked(_time)
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(help="Dead-lettered before (ISO or relative).", callback=checked(_time)),
]
OffsetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--offsets",
        help="Dead-letter positions P:O or P:A-B (repeatable).",
        callback=checked(OffsetRange.parse),
    ),
]
MaxOpt = Annotated[int, typer.Option(min=0, help="Skip records already redriven this many times.")]
SchemaOpt = Annotated[
    str | None,
    schema_typed("Schema of the dlq_redrives table (default: the configured one)."),
]


def _filter(
    error_class: list[str] | None,
    since: str | None,
    until: str | None,
    offsets: list[str] | None,
) -> LetterFilter:
    return LetterFilter.parse(
        error_classes=error_class or (), since=since, until=until, offsets=offsets or ()
    )


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _preview(data: bytes | None, limit: int = 24) -> str:
    if data is None:
        return "-"
    text = data[:limit].decode("utf-8", "replace")
    return text.encode("unicode_escape").decode() + ("…" if len(data) > limit else "")


@app.command("show")
def show(
    topic: TopicArg,
    dlq_topic: DlqOpt = None,
    error_class: ClassOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    offsets: OffsetsOpt = None,
    samples: Annotated[int, typer.Option(min=0, max=50, help="Samples per error class.")] = 3,
    max_redrives: MaxOpt = 3,
    schema: SchemaOpt = None,
) -> None:
    """Dead letters grouped by error class, with counts and samples."""
    config = settings()
    dlq = dlq_topic or dead_letter_topic(topic)
    chosen = _filter(error_class, since, until, offsets)
    target = schema or config.postgres_schema
    with (
        postgres_connect(config, autocommit=True, connect_timeout=10) as conn,
        TopicReader.from_settings(config) as reader,
    ):
        summary = dead_letter_summary(
            conn=conn,
            reader=reader,
            schema=target,
            dlq_topic=dlq,
            letter_filter=chosen,
            max_redrives=max_redrives,
            samples=samples,
        )
    if not summary:
        console.print(
            f"{safe(dlq)}: no dead letters" + (" match" if chosen != LetterFilter() else "")
        )
        return
    table = Table(title=f"{safe(dlq)}: dead letters by error class", title_justify="left")
    for column in ("error class", "count", "redriven", "at cap", "first", "last"):
        table.add_column(column, justify="left" if column == "error class" else "right")
    for entry in summary:
        table.add_row(
            safe(entry.error_class),
            f"{entry.count:,}",
            f"{entry.redriven:,}",
            f"{entry.at_cap:,}",
            _when(entry.first_at),
            _when(entry.last_at),
        )
    console.print(table)
    for entry in summary:
        if not entry.samples:
            continue
        console.print(f"[bold]{safe(entry.error_class)}[/] samples:")
        for letter in entry.samples:
            message = " ".join(letter.error_message.split())[:240]
            console.print(
                f"  {letter.partition}:{letter.offset}  from {safe(letter.source_topic)}"
                f"[{letter.source_partition}]@{letter.source_offset}"
                f"  at {_when(letter.dead_lettered_at)}  redriven {letter.redrive_count}x"
                f"  key={safe(_preview(letter.key))}\n    {safe(message)}",
                highlight=False,
                soft_wrap=True,
            )


def _positions(letters: tuple[DeadLetter, ...], limit: int = 20) -> str:
    shown = ", ".join(f"{x.partition}:{x.offset}" for x in letters[:limit])
    return shown + (f" … (+{len(letters) - limit})" if len(letters) > limit else "")


@app.command("redrive")
def redrive(
    topic: TopicArg,
    dlq_topic: DlqOpt = None,
    error_class: ClassOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    offsets: OffsetsOpt = None,
    max_redrives: MaxOpt = 3,
    schema: SchemaOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be redriven; send nothing.")
    ] = False,
) -> None:
    """Send chosen dead letters back to their source topic (each at most once)."""
    config = settings()
    dlq = dlq_topic or dead_letter_topic(topic)
    chosen = _filter(error_class, since, until, offsets)
    target = schema or config.postgres_schema
    producer = kafka_producer(config, **{"client.id": "sidestream-dlq-redrive"})
    try:
        with (
            postgres_connect(config, autocommit=True, connect_timeout=10) as conn,
            TopicReader.from_settings(config) as reader,
        ):
            report = redrive_dead_letters(
                conn=conn,
                reader=reader,
                producer=producer,
                schema=target,
                dlq_topic=dlq,
                letter_filter=chosen,
                max_redrives=max_redrives,
                dry_run=dry_run,
            )
    finally:
        producer.flush(10)
    verb = "would redrive" if dry_run else "redrove"
    console.print(
        f"{safe(dlq)}: {verb} {len(report.redriven):,}; skipped "
        f"{len(report.already_redriven):,} already redriven, "
        f"{len(report.repeats):,} repeats of a record redriven once, "
        f"{len(report.at_cap):,} at the redrive cap ({max_redrives})",
        highlight=False,
    )
    if report.redriven:
        console.print(f"  {verb}: {_positions(report.redriven)}", highlight=False)
    if report.truncated:
        err_console.print(
            f"[yellow]not redriven, truncated references[/]: {_positions(report.truncated)} — "
            "too large for the dead-letter topic, only their first KiB is there; replay "
            "each from its source position (sidestream.dlq.source.* headers)",
            highlight=False,
            soft_wrap=True,
        )
    if report.at_cap:
        err_console.print(
            f"[yellow]skipped at the redrive cap[/]: {_positions(report.at_cap)} — "
            "they failed again after every redrive; fix the cause or raise --max-redrives",
            highlight=False,
            soft_wrap=True,
        )
