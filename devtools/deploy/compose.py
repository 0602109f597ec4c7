"""Docker compose files: validated against the compose-spec JSON schema (the copy
check-jsonschema vendors), then cross-checked with the code and the rest of deploy/:
``depends_on`` targets and health conditions, ports, bind-mount sources, named volumes,
grace periods above the drain deadline, ``SIDESTREAM_*`` settings that would start, every
worker and the API run, and Prometheus scraping every service."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from devtools.deploy.report import CheckReport, load_yaml, relative
from devtools.deploy.workload import (
    deployed_workers,
    metrics_port,
    option,
    role,
    settings_problem,
    shutdown_deadline,
)


@functools.cache
def _compose_schema_validator() -> Any:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    return jsonschema.Draft7Validator(schema)


def _schema_problems(document: Any) -> Iterator[str]:
    """One line per compose-spec schema violation: where, then what."""
    for problem in sorted(_compose_schema_validator().iter_errors(document), key=str):
        where = "/".join(str(part) for part in problem.absolute_path) or "(top level)"
        yield f"compose-spec: {where}: {problem.message}"


_COMPOSE_RESTART = frozenset({"no", "always", "on-failure", "unless-stopped"})
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:us|ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(duration: str) -> float:
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(duration))


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        return dict(str(item).partition("=")[::2] for item in value)
    return {}


def check_compose(deploy_dir: Path, report: CheckReport) -> None:
    """Check every ``compose/*.y*ml``."""
    compose_dir = deploy_dir / "compose"
    files = sorted(compose_dir.glob("*.y*ml"))
    if not files:
        report.error("compose", relative(compose_dir, deploy_dir), "no compose file")
    for path in files:
        _check_compose_file(path, deploy_dir, report)


def _check_compose_file(path: Path, deploy_dir: Path, report: CheckReport) -> None:
    subject = relative(path, deploy_dir)
    document = load_yaml(path.read_text()) or {}
    base = path.parent

    def error(message: str) -> None:
        report.error("compose", subject, message)

    for violation in _schema_problems(document):
        error(violation)
    services: dict[str, Any] = document.get("services") or {}
    volumes = set((document.get("volumes") or {}).keys())
    if not services:
        error("no services")
    roles: dict[str, str] = {}
    ports_by_service: dict[str, int] = {}
    for name, service in services.items():
        where = f"service {name}"
        if not isinstance(service, dict):
            error(f"{where} is not a mapping")
            continue
        if "image" not in service and "build" not in service:
            error(f"{where}: neither image nor build")
        build = service.get("build")
        if isinstance(build, (str, dict)):
            context = base / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            if not context.is_dir():
                error(f"{where}: build context {context} does not exist")
            elif not (context / dockerfile).is_file():
                error(f"{where}: Dockerfile {dockerfile} not found in the build context")
        restart = str(service.get("restart", "no"))
        if restart.split(":")[0] not in _COMPOSE_RESTART:
            error(f"{where}: restart {restart!r} is not one of {sorted(_COMPOSE_RESTART)}")
        depends = service.get("depends_on") or {}
        targets = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for target, options in targets:
            if target not in services:
                error(f"{where}: depends_on unknown service {target!r}")
                continue
            condition = (options or {}).get("condition", "service_started")
            if condition == "service_healthy" and "healthcheck" not in services[target]:
                error(f"{where}: waits for {target} to be healthy, but it has no healthcheck")
        for port in service.get("ports", []) or []:
            if not _valid_port_spec(port):
                error(f"{where}: invalid port mapping {port!r}")
        for port in service.get("expose", []) or []:
            if not str(port).isdigit() or not 0 < int(port) < 65536:
                error(f"{where}: invalid exposed port {port!r}")
        for volume in service.get("volumes", []) or []:
            source = str(volume if isinstance(volume, str) else volume.get("source", "")).split(
                ":"
            )[0]
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    error(f"{where}: bind mount source {source} does not exist")
            elif source and source not in volumes:
                error(f"{where}: named volume {source!r} is not declared under volumes")
        health = service.get("healthcheck")
        if health is not None:
            test = health.get("test")
            if isinstance(test, list) and (not test or test[0] not in ("CMD", "CMD-SHELL", "NONE")):
                error(f"{where}: healthcheck test must start with CMD, CMD-SHELL or NONE")
            for key in ("interval", "timeout", "start_period", "start_interval"):
                if key in health and not _DURATION.match(str(health[key])):
                    error(f"{where}: healthcheck {key} {health[key]!r} is not a duration")
        grace = service.get("stop_grace_period")
        if grace is not None and not _DURATION.match(str(grace)):
            error(f"{where}: stop_grace_period {grace!r} is not a duration")
        environment = _environment(service.get("environment"))
        sidestream_env = {k: v for k, v in environment.items() if k.startswith("SIDESTREAM_")}
        command = (
            [str(c) for c in service.get("command", []) or []]
            if isinstance(service.get("command"), list)
            else str(service.get("command", "")).split()
        )
        entrypoint = service.get("entrypoint")
        argv = (
            " ".join(command).split()
            if entrypoint in (["sh", "-c"], "sh -c")
            else ["sidestream", *command]
        )
        process = role(argv)
        if sidestream_env or process:
            problem = settings_problem(sidestream_env)
            if problem:
                error(f"{where}: {problem}")
                continue
        if process is None:
            continue
        roles[name] = process
        if process.startswith("worker:"):
            deadline = shutdown_deadline(sidestream_env)
            if grace is None or _seconds(str(grace)) <= deadline:
                error(
                    f"{where}: stop_grace_period {grace} must exceed the drain deadline "
                    f"SIDESTREAM_CONSUMER_SHUTDOWN_DEADLINE_S={deadline:g}s"
                )
            ports_by_service[name] = metrics_port(sidestream_env)
            if environment.get("SIDESTREAM_METRICS_HOST") != "0.0.0.0":  # noqa: S104
                error(f"{where}: SIDESTREAM_METRICS_HOST must be 0.0.0.0 to be scraped")
        else:
            ports_by_service[name] = int(option(argv, "--port") or 8000)
            if option(argv, "--host") != "0.0.0.0":  # noqa: S104
                error(f"{where}: the API must listen on --host 0.0.0.0")
    deployed = {r.split(":", 1)[1] for r in roles.values() if r.startswith("worker:")}
    for worker in sorted(deployed_workers() - deployed):
        error(f"no service runs `sidestream worker run {worker}`")
    if "api" not in roles.values():
        error("no service runs `sidestream api`")
    _check_compose_scrapes(deploy_dir, report, subject, ports_by_service)
    _check_compose_grafana_mounts(deploy_dir, report, subject, services)
    report.ok_(
        "compose",
        subject,
        f"{len(services)} services; valid against the compose-spec schema, cross-checked",
    )


def _valid_port_spec(port: Any) -> bool:
    if isinstance(port, dict):
        target = port.get("target")
        return isinstance(target, int) and 0 < target < 65536
    text = str(port).split("/")[0]
    parts = text.rsplit(":", 2)
    numbers = [p for p in parts[-2:] if p]
    for number in numbers:
        low, _, high = number.partition("-")
        for value in (low, high or low):
            if not value.isdigit() or not 0 < int(value) < 65536:
                return False
    return bool(numbers)


def _check_compose_scrapes(
    deploy_dir: Path, report: CheckReport, subject: str, ports: Mapping[str, int]
) -> None:
    config_path = deploy_dir / "prometheus" / "prometheus.yml"
    config = load_yaml(config_path.read_text()) or {}
    scraped: dict[str, int] = {}
    for job in config.get("scrape_configs", []):
        if job.get("job_name") != "sidestream":
            continue
        for sd in job.get("dns_sd_configs", []):
            for name in sd.get("names", []):
                scraped[str(name)] = int(sd.get("port", 0))
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, number = str(target).rpartition(":")
                scraped[host] = int(number)
    for service, port in sorted(ports.items()):
        if service not in scraped:
            report.error("compose", subject, f"prometheus.yml does not scrape service {service}")
        elif scraped[service] != port:
            report.error(
                "compose",
                subject,
                f"prometheus.yml scrapes {service} on port {scraped[service]}, it serves {port}",
            )
    for name in sorted(set(scraped) - set(ports)):
        report.error("compose", subject, f"prometheus.yml scrapes {name}, not a Sidestream service")


def _check_compose_grafana_mounts(
    deploy_dir: Path, report: CheckReport, subject: str, services: Mapping[str, Any]
) -> None:
    providers = [
        provider
        for path in sorted((deploy_dir / "grafana/provisioning/dashboards").glob("*.y*ml"))
        for provider in (load_yaml(path.read_text()) or {}).get("providers", [])
    ]
    wanted = {str(p.get("options", {}).get("path")) for p in providers if p.get("type") == "file"}
    mounted = {
        str(volume).split(":")[1]
        for service in services.values()
        if isinstance(service, dict)
        for volume in service.get("volumes", []) or []
        if isinstance(volume, str) and "grafana/dashboards" in volume.split(":")[0]
    }
    for path in sorted(wanted - mounted):
        report.error(
            "compose", subject, f"Grafana reads dashboards from {path}; nothing is mounted there"
        )
