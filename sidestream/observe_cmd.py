"""``sidestream observe up|down|status|add``: a local Prometheus for the local stack.

``make observe`` starts Debian's ``prometheus`` binary (no Docker) as a detached child
with its data under ``<stack_dir>/prometheus/``, listening on 127.0.0.1:9090, loading
the project's rules (``deploy/prometheus/rules/*.rules.yml``, the same as in
production), and scraping every process of the local stack that serves ``/metrics``.

Targets are found with file-based service discovery: every JSON file in
``<stack_dir>/prometheus/targets/`` is a Prometheus ``file_sd`` list naming one
process (``[{"targets": ["127.0.0.1:41234"], "labels": {"component": "audit"}}]``).
A process registers itself by writing ``<component>-<pid>.json`` when its metrics
server starts and removing it when it stops (:func:`runtime.observability.announce_targets`,
:func:`runtime.observability.write_target_file`); Prometheus
re-reads the folder within seconds. ``observe up`` prunes the files of processes that
died without cleaning up, and ``observe add`` registers a process by hand.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from devtools.deploy.report import default_deploy_dir
from devtools.localstack.process import process_cmdline
from devtools.localstack.server import LocalServer
from runtime import StackError
from runtime.observability import targets_dir, write_target_file
from sidestream.context import console, settings
from sidestream.errors import App

__all__ = [
    "DEFAULT_PORT",
    "PrometheusServer",
    "Target",
    "prune_targets",
    "read_targets",
    "targets_dir",
    "write_target_file",
]

#: Where ``make observe``'s Prometheus listens (Prometheus's usual port).
DEFAULT_PORT = 9090
#: The scrape job of every Sidestream process; the rules select ``job="sidestream"``.
JOB = "sidestream"

_TARGET_FILE = re.compile(r"^(?P<component>[a-z0-9-]+)-(?P<pid>\d+|static)\.json$")

app = App(help="A local Prometheus scraping the local stack (make observe).")


# --------------------------------------------------------------------------------------
# Target files (file_sd)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """One registered process: its component, ``host:port`` and PID (None: by hand)."""

    component: str
    address: str
    pid: int | None
    path: Path

    @property
    def alive(self) -> bool:
        """The registering process still runs (always True for hand-made entries)."""
        return self.pid is None or process_cmdline(self.pid) is not None


def read_targets(directory: Path) -> list[Target]:
    """Every registered target, sorted by component (malformed files are skipped)."""
    found: list[Target] = []
    for path in sorted(directory.glob("*.json")):
        match = _TARGET_FILE.match(path.name)
        if match is None:
            continue
        try:
            entries = json.loads(path.read_text())
            address = str(entries[0]["targets"][0])
        except (OSError, ValueError, LookupError, TypeError):
            continue
        pid = None if match["pid"] == "static" else int(match["pid"])
        found.append(Target(match["component"], address, pid, path))
    return sorted(found, key=lambda t: (t.component, t.address))


def prune_targets(directory: Path) -> list[Target]:
    """Delete the files of processes that exited without unregistering; returns them."""
    stale = [target for target in read_targets(directory) if not target.alive]
    for target in stale:
        target.path.unlink(missing_ok=True)
    return stale


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class PrometheusServer(LocalServer):
    """Prometheus as a local server: generated config, file_sd targets, our rules."""

    name = "prometheus"
    start_timeout = 30.0

    def __init__(
        self,
        *,
        stack_dir: Path,
        port: int = DEFAULT_PORT,
        binary: Path | None = None,
        rules_dir: Path | None = None,
        scrape_interval_s: int = 5,
    ) -> None:
        super().__init__(stack_dir=stack_dir, port=port)
        self._binary = binary
        self.rules_dir = rules_dir or default_deploy_dir() / "prometheus" / "rules"
        self.scrape_interval_s = scrape_interval_s
        self.config_path = self.data_dir / "prometheus.yml"
        self.targets_dir = targets_dir(stack_dir)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def binary(self) -> Path:
        found = self._binary or (Path(p) if (p := shutil.which("prometheus")) else None)
        if found is None or not found.exists():
            raise StackError(
                self.name,
                "prometheus binary not found: run `sudo deploy/install-tools.sh` "
                "(Debian's prometheus package)",
            )
        return found

    def config(self) -> dict[str, object]:
        """The generated configuration (also what tests check with promtool)."""
        interval = f"{self.scrape_interval_s}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.rules_dir.resolve() / "*.rules.yml")],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "file_sd_configs": [
                        {
                            "files": [str(self.targets_dir.resolve() / "*.json")],
                            "refresh_interval": interval,
                        }
                    ],
                },
                {"job_name": "prometheus", "static_configs": [{"targets": [self.address]}]},
            ],
        }

    def prepare(self) -> None:
        super().prepare()
        if not any(self.rules_dir.glob("*.rules.yml")):
            raise StackError(self.name, f"no rules in {self.rules_dir}: is deploy/ there?")
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        prune_targets(self.targets_dir)
        header = "# Generated by `sidestream observe up`; rewritten on every start.\n"
        self.config_path.write_text(header + yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [
            str(self.binary()),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={self.address}",
            # POST /-/reload picks up edited rules without a restart.
            "--web.enable-lifecycle",
        ]

    def is_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310
            return int(response.status) == 200

    def port_setting_hint(self) -> str:
        return "`sidestream observe up --port`"


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on (127.0.0.1).")]


def _server(port: int) -> PrometheusServer:
    return PrometheusServer(stack_dir=Path(settings().stack_dir).resolve(), port=port)


def _targets_table(directory: Path) -> Table:
    table = Table(title=f"targets ({directory})")
    for column in ("component", "address", "pid", "process"):
        table.add_column(column)
    for target in read_targets(directory):
        if target.pid is None:
            pid, state = "by hand", "-"
        else:
            pid, state = str(target.pid), "[green]running[/]" if target.alive else "[red]gone[/]"
        table.add_row(target.component, target.address, pid, state)
    return table


@app.command()
def up(port: PortOption = DEFAULT_PORT) -> None:
    """Start Prometheus (if not running) with the project's rules; list the targets."""
    server = _server(port)
    with console.status("starting prometheus..."):
        status = server.start()
    console.print(f"prometheus: {server.url} (pid {status.pid}), data in {server.data_dir}")
    console.print(_targets_table(server.targets_dir))
    console.print(
        "workers and the API register themselves in that folder when they start; "
        "`sidestream observe add COMPONENT HOST:PORT` adds one by hand"
    )


@app.command()
def down(port: PortOption = DEFAULT_PORT) -> None:
    """Stop the Prometheus `observe up` started (by PID); its data stays."""
    stopped = _server(port).stop()
    console.print(f"prometheus: {'stopped' if stopped else 'was not running'}")


@app.command()
def status(port: PortOption = DEFAULT_PORT) -> None:
    """Show Prometheus's PID and health and the registered targets; exit 1 if down."""
    server = _server(port)
    state = server.status()
    console.print(f"prometheus: {state.detail} ({server.url}, pid {state.pid or '-'})")
    console.print(_targets_table(server.targets_dir))
    if not state.healthy:
        raise typer.Exit(code=1)


@app.command()
def add(
    component: Annotated[str, typer.Argument(help="Label, e.g. api, audit, outbox-relay.")],
    address: Annotated[str, typer.Argument(help="HOST:PORT serving /metrics.")],
    pid: Annotated[
        int | None, typer.Option(help="PID of the process: its entry goes when it exits.")
    ] = None,
) -> None:
    """Register a process for scraping by hand (e.g. one started outside the CLI)."""
    if pid is not None and process_cmdline(pid) is None:
        raise typer.BadParameter(f"no process {pid}", param_hint="--pid")
    try:
        path = write_target_file(
            targets_dir(Path(settings().stack_dir).resolve()), component, address, pid=pid
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'ADDRESS'") from exc
    console.print(f"registered {component} at {address}: {path}")
