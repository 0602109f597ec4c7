"""``sidestream console`` (``make console``): the operator console in a browser.

Serves :mod:`services.console` over the running stack (``make up`` first). Sign-in takes
an API key: the API's key store is the verifier in production; on the local profile,
until a key store is wired, the command makes one random operator key and one read-only
key for this process only and prints a link that signs in with the first.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from producers import EventPublisher
from runtime import RuntimeSetupError
from runtime.observability import targets_dir
from services.console import (
    AuditTrail,
    ConsoleConfig,
    Principal,
    StaticKeyVerifier,
    create_app,
    default_pipelines,
)
from services.workers import WORKERS
from sidestream.context import console, settings

app = typer.Typer(help="The operator console (web).")


@app.callback(invoke_without_command=True)
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    schema: Annotated[
        str | None, typer.Option(help="Postgres schema (default: SIDESTREAM_POSTGRES_SCHEMA).")
    ] = None,
    bench_dir: Annotated[Path, typer.Option(help="`make bench` results shown as charts.")] = Path(
        "bench/results"
    ),
) -> None:
    """Serve the console until Ctrl-C; prints the URL (and, locally, a sign-in link)."""
    loaded = settings()
    if loaded.profile != "local":
        raise RuntimeSetupError(
            "the console signs in with the API's keys, and no key store is wired to it in this "
            "build; run it with SIDESTREAM_PROFILE=local on an operator machine"
        )
    operator_key, reader_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    verifier = StaticKeyVerifier.of(
        {
            operator_key: Principal("local-operator", frozenset({"admin", "read"})),
            reader_key: Principal("local-reader", frozenset({"read"})),
        }
    )
    config = ConsoleConfig(
        pipelines=default_pipelines(WORKERS.values()),
        schema=schema,
        targets_dir=targets_dir(Path(loaded.stack_dir).resolve()),
        bench_dir=bench_dir.resolve(),
    )
    publisher = EventPublisher(settings=loaded, producer="sidestream-console")
    web = create_app(
        loaded, config, verifier=verifier, audit=AuditTrail(publisher), link_sign_in=True
    )
    url = f"http://{host}:{port}"
    console.print(f"console: {url}", highlight=False)
    console.print(f"  sign in as operator:  {url}/login?key={operator_key}", highlight=False)
    console.print(f"  read-only key:        {reader_key}", highlight=False)
    console.print("  (keys live in this process only; Ctrl-C stops the console)")
    try:
        uvicorn.run(web, host=host, port=port, log_level="warning")
    finally:
        publisher.close(10)
