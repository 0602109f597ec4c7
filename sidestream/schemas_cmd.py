"""``sidestream schemas check`` (the schema gate, run in CI) and ``sidestream schemas release``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from consumers.sinks.contracts import check_contracts
from schemas import AVRO_DIR, ConfluentSchemaRegistry, SchemaError, check_compatibility
from schemas.catalog import version_files
from schemas.errors import RegistryError
from schemas.registry_check import check_registry, register_missing
from schemas.releases import ReleaseRefusedError, check_releases, release
from sidestream.context import console, err_console, settings
from sidestream.errors import App

app = App(help="Event schemas: the gate and the release record.")

_ROOT = typer.Option(help="Folder of <subject>/vN.avsc files, compatibility.yaml, released.yaml.")


def _problem(label: str, text: object) -> None:
    err_console.print(f"[red]{label}:[/] {escape(str(text))}", highlight=False, soft_wrap=True)


def _report(label: str, run: Callable[[], Sequence[object]]) -> int:
    """Print each problem `run` finds (or the error that stopped it) on one line; how many."""
    try:
        problems: Sequence[object] = run()
    except (SchemaError, ValueError) as exc:
        problems = [exc]
    for problem in problems:
        _problem(label, problem)
    return len(problems)


@app.command("check")
def check(
    root: Annotated[Path, _ROOT] = AVRO_DIR,
    registry: Annotated[
        bool,
        typer.Option(
            "--registry",
            help="Also compare the released versions with SIDESTREAM_SCHEMA_REGISTRY_URL.",
        ),
    ] = False,
    register: Annotated[
        bool,
        typer.Option(
            "--register", help="With --registry: register the released versions it lacks."
        ),
    ] = False,
) -> None:
    """Fail (exit 1) on a changed, missing or unreleased version, an incompatible change, or a
    field its sink neither stores nor ignores; with --registry, on a registry that disagrees."""
    failures = _report("release", lambda: check_releases(root))
    failures += _report("incompatible", lambda: check_compatibility(root))
    failures += _report("sink contract", lambda: check_contracts(root))
    if registry:
        failures += _check_registry(root, register=register)
    elif register:
        raise typer.BadParameter("--register needs --registry")
    if failures:
        raise typer.Exit(code=1)
    for subject, versions in version_files(root).items():
        console.print(
            f"{subject}: v1..v{len(versions)} released and unchanged, "
            f"v{len(versions)} compatible with {len(versions) - 1} earlier"
        )
    console.print("[green]schemas: all released, compatible and stored by their sinks[/]")


def _check_registry(root: Path, *, register: bool) -> int:
    url = settings().schema_registry_url
    if not url:
        _problem(
            "registry", "--registry needs SIDESTREAM_SCHEMA_REGISTRY_URL (e.g. http://host:8081)"
        )
        return 1
    try:
        client = ConfluentSchemaRegistry(url=url)
        if register:
            for subject, version, schema_id in register_missing(client, root):
                console.print(f"registered v{version} under {subject} as schema id {schema_id}")
        problems = check_registry(client, root)
    except (RegistryError, SchemaError, ValueError) as exc:
        _problem("registry", exc)
        return 1
    for problem in problems:
        _problem(f"registry ({problem.kind})", problem)
    if not problems:
        console.print(f"registry {client.url}: every released version registered, levels agree")
    return len(problems)


@app.command("release")
def release_cmd(
    subject: Annotated[
        str | None, typer.Argument(help="Release this subject only (default: every subject).")
    ] = None,
    root: Annotated[Path, _ROOT] = AVRO_DIR,
) -> None:
    """Pin every unreleased vN.avsc in released.yaml, after checking it is compatible with the
    versions before it; refuses (exit 1) if a released version changed or disappeared."""
    known = version_files(root)
    if subject is not None and subject not in known:
        raise typer.BadParameter(
            f"unknown subject {subject!r}: the subjects are {', '.join(sorted(known))}",
            param_hint="'SUBJECT'",
        )
    try:
        released = release(root, subject)
    except (ReleaseRefusedError, SchemaError) as exc:
        _problem("refused", exc)
        raise typer.Exit(code=1) from None
    for entry in released:
        console.print(
            f"released {entry.subject} v{entry.version} ({entry.fingerprints})", highlight=False
        )
    if not released:
        console.print("nothing to release: every version is already released")
