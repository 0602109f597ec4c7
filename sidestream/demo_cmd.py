"""``sidestream demo`` (``make demo``): the main job end to end on the local stack
(the demo itself lives in :mod:`devtools.demo`)."""

from __future__ import annotations

from typing import Annotated

import typer

from devtools.demo import DemoError, run_demo
from sidestream.context import settings
from sidestream.errors import App

app = App()


@app.command()
def demo(
    events: Annotated[int, typer.Option(min=0, help="Events to publish directly.")] = 3000,
    requests: Annotated[int, typer.Option(min=0, help="Mixed API requests after set-up.")] = 800,
    keep_stack: Annotated[
        bool, typer.Option(help="Leave Kafka/Postgres/Redis running afterwards.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for everything to land.")
    ] = 120,
) -> None:
    """Run the main job end to end on the local stack and print a summary."""
    try:
        code = run_demo(
            settings(), events=events, requests=requests, keep_stack=keep_stack, timeout=timeout
        )
    except DemoError:
        code = 1
    raise typer.Exit(code=code)
