"""``sidestream schemas check``: the schema compatibility gate (run in CI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas import AVRO_DIR, check_compatibility, default_catalog
from sidestream.context import console, err_console
from sidestream.errors import App

app = App(help="Event schemas.")


@app.command("check")
def check(
    root: Annotated[
        Path, typer.Option(help="Folder of <subject>/vN.avsc files and compatibility.yaml.")
    ] = AVRO_DIR,
) -> None:
    """Compare every schema with its earlier versions; exit 1 on an incompatible change."""
    problems = check_compatibility(root)
    for problem in problems:
        err_console.print(f"[red]incompatible:[/] {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(code=1)
    if root == AVRO_DIR:
        catalog = default_catalog()
        for subject in catalog.subjects:
            versions = catalog.versions(subject)
            console.print(
                f"{subject}: v{versions[-1].version} compatible with {len(versions) - 1} earlier"
            )
    console.print("[green]schemas: all compatible[/]")
