"""``sidestream api``: serve the reference API (``services.api``); ``sidestream api
openapi``: print its OpenAPI document."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from runtime import ConfigError
from runtime.observability import targets_dir, write_target_file
from runtime.production import check_production
from services.api import ApiConfig, create_app, serve
from services.api.resources import jwt_authenticator
from sidestream.context import console, settings
from sidestream.errors import App, SchemaOption, keep_kafka_log

app = App(help="The reference API (FastAPI + uvicorn).", no_args_is_help=False)

HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[
    int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one, reported).")
]
NamespaceOption = Annotated[
    str, typer.Option(help="Cache namespace (the invalidation worker must use the same).")
]


@app.callback(invoke_without_command=True)
def api(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    schema: SchemaOption = None,
    namespace: NamespaceOption = "sidestream",
) -> None:
    """Serve the API until SIGTERM/SIGINT, then drain: stop accepting, finish in-flight
    requests, flush events to Kafka, close pools. Needs `sidestream db migrate`."""
    if ctx.invoked_subcommand is not None:
        return
    loaded = settings()
    check_production(loaded, "api")  # refuses defaults, no auth, plaintext (exit 2)
    try:
        jwt_authenticator(loaded)  # a JWKS file that cannot be used: one line, exit 2
    except ValueError as exc:
        raise ConfigError(f"SIDESTREAM_API_JWT_JWKS: {exc}") from None
    keep_kafka_log()  # a long-running server: report Kafka outages while retrying
    target: Path | None = None
    # With port 0 the bound port is known only once serving: it goes to the ready file.
    if loaded.profile == "local" and port != 0:
        # `make observe` (sidestream observe) scrapes the API through this file.
        address = f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        with contextlib.suppress(OSError):
            target = write_target_file(
                targets_dir(Path(loaded.stack_dir).resolve()), "api", address, pid=os.getpid()
            )
    try:
        serve(loaded, host, port, config=ApiConfig(schema=schema, cache_namespace=namespace))
    finally:
        if target is not None:
            target.unlink(missing_ok=True)


@app.command("openapi")
def openapi() -> None:
    """Print the OpenAPI document (JSON) without starting anything."""
    document = create_app(settings()).openapi()
    console.print_json(json.dumps(document))
