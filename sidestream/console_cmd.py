"""``sidestream console`` (``make console``): the operator console in a browser.

Serves :mod:`services.console` over the running stack (``make up`` first). Sign-in takes
an API key of the operator tenant (``--operator-tenant``, default ``ops``), checked by the
API's own key store: ``admin`` scope = operator, ``read`` = read-only. Set one up with
``sidestream tenants create ops`` and ``sidestream keys create --tenant ops --scope admin``.
On the local profile the command does that for you (a fresh operator key and read-only
key each run) and prints a sign-in link.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from producers import EventPublisher
from runtime import Settings
from runtime.clients import postgres_connect
from runtime.observability import targets_dir
from runtime.ports import listen_on
from services.api.keys import create_key, create_tenant, list_tenants
from services.console import AuditTrail, ConsoleConfig, create_app, default_pipelines
from services.console.keys import ApiKeyVerifier
from services.workers import WORKERS
from sidestream.context import console, settings
from sidestream.errors import App, SchemaOption

app = App(help="The operator console (web).")


def _local_keys(config: Settings, tenant: str, schema: str | None) -> tuple[str, str]:
    """An operator key and a read-only key of ``tenant`` (made if missing), valid a day."""
    hash_key = config.api_key_hash_secret.get_secret_value().encode()
    expires = datetime.now(UTC) + timedelta(days=1)
    with postgres_connect(config, schema=schema, autocommit=True, connect_timeout=10) as conn:
        if tenant not in {t.tenant_id for t in list_tenants(conn)}:
            create_tenant(conn, tenant, "operators (made by sidestream console)")
        keys = [
            create_key(
                conn,
                tenant,
                scopes=scopes,
                hash_key=hash_key,
                expires_at=expires,
                description=f"sidestream console ({role})",
            ).token
            for scopes, role in ((["admin"], "operator"), (["read"], "read-only"))
        ]
    return keys[0], keys[1]


@app.callback(invoke_without_command=True)
def run(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8090,
    schema: SchemaOption = None,
    operator_tenant: Annotated[
        list[str] | None,
        typer.Option(help="Tenants whose keys may sign in (default: ops)."),
    ] = None,
    bench_dir: Annotated[Path, typer.Option(help="`make bench` results shown as charts.")] = Path(
        "bench/results"
    ),
) -> None:
    """Serve the console until Ctrl-C; prints the URL (and, locally, a sign-in link)."""
    loaded = settings()
    listening = listen_on(host, port)  # a port in use: one line, exit 2, before anything
    operators = frozenset(operator_tenant or ["ops"])
    local = loaded.profile == "local"
    verifier = ApiKeyVerifier(loaded, schema=schema)
    config = ConsoleConfig(
        pipelines=default_pipelines(WORKERS.values()),
        schema=schema,
        targets_dir=targets_dir(Path(loaded.stack_dir).resolve()),
        bench_dir=bench_dir.resolve(),
        operator_tenants=operators,
    )
    publisher = EventPublisher(settings=loaded, producer="sidestream-console")
    web = create_app(
        loaded, config, verifier=verifier, audit=AuditTrail(publisher), link_sign_in=local
    )
    url = f"http://{host}:{port}"
    console.print(f"console: {url}", highlight=False)
    if local:
        tenant = sorted(operators)[0]
        operator_key, reader_key = _local_keys(loaded, tenant, schema)
        console.print(f"  sign in as operator:  {url}/login?key={operator_key}", highlight=False)
        console.print(f"  read-only key:        {reader_key}", highlight=False)
        console.print(
            f"  (keys of tenant {tenant}, valid a day: `sidestream keys list --tenant {tenant}`)"
        )
    else:
        console.print(
            f"  sign in with an API key of {', '.join(sorted(operators))} "
            "(admin scope: operator; read: read-only)"
        )
    try:
        uvicorn.Server(uvicorn.Config(web, host=host, port=port, log_level="warning")).run(
            sockets=[listening]
        )
    finally:
        listening.close()
        publisher.close(10)
