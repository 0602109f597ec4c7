"""``sidestream topics plan|apply``: topics as code (``schemas/topics.yaml``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from producers import apply_topics, plan_topics
from runtime.clients import kafka_admin
from schemas.topics import load_topics
from sidestream.context import console, settings
from sidestream.errors import App

app = App(help="Create and compare topics from schemas/topics.yaml.")


def _show(plan_rows: list[tuple[str, str, str]]) -> None:
    table = Table(title="topics: file vs cluster")
    for column in ("change", "topic", "detail"):
        table.add_column(column)
    for row in plan_rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def plan() -> None:
    """Show what differs between topics.yaml and the cluster; change nothing."""
    topic_plan = plan_topics(kafka_admin(settings()), load_topics())
    if topic_plan.in_sync:
        console.print("[green]topics: in sync with topics.yaml[/]")
    else:
        _show(topic_plan.rows())


@app.command()
def apply(
    prune: Annotated[
        bool, typer.Option(help="Also delete sidestream.* topics not in the file.")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="Say what would be done; do nothing.")] = False,
) -> None:
    """Create missing topics; show (or apply, where the broker allows) other differences."""
    admin = kafka_admin(settings())
    topic_plan = plan_topics(admin, load_topics())
    if topic_plan.in_sync:
        console.print("[green]topics: in sync with topics.yaml[/]")
        return
    _show(topic_plan.rows())
    for line in apply_topics(admin, topic_plan, prune=prune, dry_run=dry_run):
        console.print(line)
