"""``sidestream observe``: target files, the generated config, and a real Prometheus
(Debian's binary) scraping a real metrics server through file-based discovery."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Gauge

from runtime import ObservabilityServer
from runtime.observability import new_registry
from sidestream.observe_cmd import (
    PrometheusServer,
    prune_targets,
    read_targets,
    targets_dir,
    write_target_file,
)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_target_files_round_trip_and_stale_ones_are_pruned(tmp_path: Path) -> None:
    directory = targets_dir(tmp_path)
    mine = write_target_file(directory, "audit", "127.0.0.1:4100", pid=os.getpid())
    gone = write_target_file(directory, "analytics", "127.0.0.1:4101", pid=dead_pid())
    by_hand = write_target_file(directory, "api", "127.0.0.1:8000")
    (directory / "notes.json").write_text("not a target")  # ignored: not our file name
    assert json.loads(mine.read_text()) == [
        {"targets": ["127.0.0.1:4100"], "labels": {"component": "audit"}}
    ]
    assert [(t.component, t.address, t.alive) for t in read_targets(directory)] == [
        ("analytics", "127.0.0.1:4101", False),
        ("api", "127.0.0.1:8000", True),
        ("audit", "127.0.0.1:4100", True),
    ]
    assert [t.path for t in prune_targets(directory)] == [gone]
    assert not gone.exists()
    assert mine.exists()
    assert by_hand.exists()
    assert not list(directory.glob("*.tmp"))  # written atomically, no scratch left


@pytest.mark.parametrize(
    ("component", "address"),
    [("Audit", "127.0.0.1:1"), ("../x", "127.0.0.1:1"), ("api", "nowhere")],
)
def test_bad_target_names_are_refused(tmp_path: Path, component: str, address: str) -> None:
    with pytest.raises(ValueError, match=r"component|address"):
        write_target_file(tmp_path, component, address)


def test_generated_config_is_valid_for_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (deploy/install-tools.sh)")
    server = PrometheusServer(stack_dir=tmp_path, port=0)
    config = server.config()
    assert config["rule_files"] == [str(server.rules_dir.resolve() / "*.rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files found" in result.stdout


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5) as response:  # noqa: S310
        result: list[dict[str, Any]] = json.load(response)["data"]["result"]
        return result


def test_prometheus_scrapes_a_registered_process_and_loads_the_rules(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (deploy/install-tools.sh)")
    registry = new_registry()
    Gauge("sidestream_consumer_paused", "doc", ["sink"], registry=registry).labels("audit").set(1)
    server = PrometheusServer(stack_dir=tmp_path, port=0, scrape_interval_s=1)
    with ObservabilityServer(port=0, registry=registry) as metrics:
        server.start()
        try:
            pid = server.pidfile.live_pid()
            assert pid is not None
            write_target_file(
                server.targets_dir, "audit", f"127.0.0.1:{metrics.port}", pid=os.getpid()
            )
            deadline = time.monotonic() + 60
            found: list[dict[str, Any]] = []
            while not found and time.monotonic() < deadline:
                found = _query(server.url, 'sidestream_consumer_paused{job="sidestream"}')
                time.sleep(0.5)
            assert found, "prometheus never scraped the registered target"
            assert found[0]["metric"]["component"] == "audit"
            assert found[0]["value"][1] == "1"
            rules_url = f"{server.url}/api/v1/rules"
            with urllib.request.urlopen(rules_url, timeout=5) as response:  # noqa: S310
                groups = json.load(response)["data"]["groups"]
            alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
            assert {"SidestreamSinkPaused", "SidestreamTargetDown"} <= alerts
        finally:
            assert server.stop()
    assert server.pidfile.live_pid() is None
