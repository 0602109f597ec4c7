"""``sidestream tenants`` and ``sidestream keys`` as a user runs them (child processes,
real Postgres): the secret is printed once, lists never show it, revocation sticks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from consumers import CONSUMER_MIGRATIONS
from producers import OUTBOX_MIGRATIONS
from runtime import Settings
from runtime.migrations import migrate
from services import SERVICES_MIGRATIONS
from services.api.keys import parse_key
from sidestream import context
from sidestream.main import app
from sidestream.tenants_cmd import parse_expiry


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _cli(settings: Settings, schema: str, *args: str) -> _Result:
    """``sidestream ARGS`` in this process (typer's runner), with the schema's settings;
    the first test also runs it as a child process, as a user would."""
    env = {
        "SIDESTREAM_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
        "SIDESTREAM_POSTGRES_SCHEMA": schema,
    }
    # The command sets up process-wide logging (``configure_logging``) on the runner's
    # temporary stderr, closed once it returns: put the root logger back as it was, or
    # every later record, in any later test, is "--- Logging error --- I/O operation on
    # closed file".
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    context.settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env=env)
    finally:
        context.settings.cache_clear()
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    return _Result(result.exit_code, result.stdout, result.stderr)


def _process(settings: Settings, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDESTREAM_")}
    env.update(
        SIDESTREAM_POSTGRES_DSN=settings.postgres_dsn.get_secret_value(),
        SIDESTREAM_POSTGRES_SCHEMA=schema,
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return subprocess.run(
        [sys.executable, "-m", "sidestream", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


def test_tenants_and_keys_round_trip(
    stack_settings: Settings, pg_conn: psycopg.Connection[Any], pg_schema: str
) -> None:
    missing = _process(stack_settings, pg_schema, "tenants", "list")
    assert missing.returncode == 1  # like every command (sidestream/errors.py)
    assert missing.stderr == (
        'error: Postgres: relation "tenants" does not exist — run `sidestream db migrate`\n'
    )
    assert "Traceback" not in missing.stderr

    migrate(
        pg_conn, [OUTBOX_MIGRATIONS, CONSUMER_MIGRATIONS, SERVICES_MIGRATIONS], schema=pg_schema
    )
    assert _cli(stack_settings, pg_schema, "tenants", "create", "acme").returncode == 0
    duplicate = _cli(stack_settings, pg_schema, "tenants", "create", "acme")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    made = _process(
        stack_settings,
        pg_schema,
        "keys",
        "create",
        "--tenant",
        "acme",
        "--scope",
        "write",
        "--scope",
        "notify",
        "--expires",
        "30d",
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    parsed = parse_key(token)
    assert parsed is not None
    key_id, secret = parsed
    assert "shown once" in made.stderr

    listed = _cli(stack_settings, pg_schema, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0
    assert f"ssk_{key_id}_" in listed.stdout
    assert secret not in listed.stdout
    assert "active" in listed.stdout
    assert "notify, write" in listed.stdout

    unknown = _cli(stack_settings, pg_schema, "keys", "create", "--tenant", "nope")
    assert unknown.returncode == 1
    assert "no tenant 'nope'" in unknown.stderr
    bad_scope = _cli(
        stack_settings, pg_schema, "keys", "create", "--tenant", "acme", "--scope", "root"
    )
    assert bad_scope.returncode == 2

    assert _cli(stack_settings, pg_schema, "keys", "revoke", token).returncode == 0
    row = pg_conn.execute(
        f'SELECT revoked_at FROM "{pg_schema}".api_keys WHERE key_id = %s', (key_id,)
    ).fetchone()
    assert row is not None
    assert row[0] is not None
    assert "revoked" in _cli(stack_settings, pg_schema, "keys", "list").stdout
    assert _cli(stack_settings, pg_schema, "keys", "revoke", "0" * 16).returncode == 1
    tenants = _cli(stack_settings, pg_schema, "tenants", "list")
    assert "acme" in tenants.stdout


def test_expiry_takes_durations_and_iso_times() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry(None) is None
    assert parse_expiry("90d", now) == now + timedelta(days=90)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-02-01", now) == datetime(2027, 2, 1, tzinfo=UTC)
    assert parse_expiry("2027-02-01T10:00:00+02:00", now) == datetime(2027, 2, 1, 8, tzinfo=UTC)
    for bad in ("soon", "0d", "-1d", "10y"):
        with pytest.raises(typer.BadParameter):
            parse_expiry(bad, now)
