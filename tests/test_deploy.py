"""The deploy assets parse, and what they name exists: every environment variable they set is a
setting tracehouse reads, every role and command they run is one tracehouse has, every probe points
at a route that answers. No container engine runs here, so the files are checked by parsing."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from tracehouse.settings import Settings, WorkerRole

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return names


SETTINGS = _setting_names()
COMMANDS = {"web", "worker", "migrate", "serve", "engine"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _kubernetes() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "kubernetes" / "tracehouse.yaml").read_text()) if doc]


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line.removesuffix(chr(92))}".strip()
        if not line.endswith(chr(92)):
            joined.append(current)
            current = ""
    return joined


def test_the_image_runs_tracehouse_with_a_command_per_role():
    instructions = _instructions((DEPLOY / "Dockerfile").read_text())
    assert instructions[0].startswith("FROM python:3.11")
    entrypoint = next(line for line in instructions if line.startswith("ENTRYPOINT"))
    command = next(line for line in instructions if line.startswith("CMD"))
    assert yaml.safe_load(entrypoint.removeprefix("ENTRYPOINT")) == ["tracehouse"]
    assert yaml.safe_load(command.removeprefix("CMD"))[0] in COMMANDS
    env = next(line for line in instructions if line.startswith("ENV"))
    for assignment in shlex.split(env.removeprefix("ENV")):
        name = assignment.split("=")[0]
        assert name in SETTINGS or name.startswith("PYTHON"), assignment
    copied = [line.split()[1] for line in instructions if line.startswith("COPY") and "--from" not in line]
    root = DEPLOY.parent
    assert all((root / path).exists() or (root / path.rstrip("/")).exists() for path in copied), copied


def test_compose_runs_each_role_as_its_own_service_with_real_settings():
    compose = _compose()
    services = compose["services"]
    tracehouse = {name: s for name, s in services.items() if s.get("image", "").startswith("tracehouse")}
    assert set(tracehouse) == {"migrate", "web", "worker-ingestion", "worker-export"}
    roles = {name: s["environment"].get("LANGFUSE_WORKER_ROLE") for name, s in tracehouse.items()}
    assert roles["worker-ingestion"] == WorkerRole.INGESTION.value and roles["worker-export"] == WorkerRole.EXPORT.value
    for name, service in tracehouse.items():
        assert service["command"][0] in COMMANDS, name
        unknown = set(service["environment"]) - SETTINGS
        assert not unknown, f"{name} sets variables tracehouse does not read: {sorted(unknown)}"
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
            assert service["healthcheck"]["test"], name
    # Exports have their own ClickHouse user, as do interactive reads and ingestion.
    env = tracehouse["web"]["environment"]
    users = {
        env[key].split("//")[1].split(":")[0]
        for key in ("CLICKHOUSE_URL", "TRACEHOUSE_CLICKHOUSE_INGESTION_URL", "CLICKHOUSE_EXPORT_URL")
    }
    assert len(users) == 3, users
    # Each user's password reaches the ClickHouse server (the users file reads it from_env) and is
    # the one in tracehouse's URL for that user.
    import re

    # The profiles' os_thread_priority takes effect only with CAP_SYS_NICE.
    assert "SYS_NICE" in services["clickhouse"]["cap_add"]
    wanted = set(re.findall(r'from_env="([A-Z_]+)"', (DEPLOY / "clickhouse-users.xml").read_text()))
    server_env = services["clickhouse"]["environment"]
    assert wanted and wanted <= set(server_env), wanted - set(server_env)
    for key in ("CLICKHOUSE_URL", "TRACEHOUSE_CLICKHOUSE_INGESTION_URL", "CLICKHOUSE_EXPORT_URL"):
        user, password = env[key].split("//")[1].split("@")[0].split(":", 1)
        variable = f"TRACEHOUSE_CH_{user.removeprefix('tracehouse_').upper()}_PASSWORD"
        assert server_env[variable] == password, (key, variable)


def test_kubernetes_manifests_run_each_role_with_probes_and_resources():
    docs = _kubernetes()
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert ("Job", "tracehouse-migrate") in kinds and ("Service", "tracehouse-web") in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"tracehouse-web", "tracehouse-worker-ingestion", "tracehouse-worker-export"}
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"], name
        [container] = spec["template"]["spec"]["containers"]
        assert container["args"][0] in COMMANDS, name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            http = container[probe]["httpGet"]
            assert http["path"].startswith("/api/") and http["port"] in ports, (name, probe)
        assert container["resources"]["requests"]["memory"] and container["resources"]["limits"]["memory"]
        role = {e["name"]: e["value"] for e in container.get("env", [])}.get("LANGFUSE_WORKER_ROLE")
        if "worker" in name:
            assert role == name.removeprefix("tracehouse-worker-") and ports["health"] == 3030
        else:
            assert role is None and ports["http"] == 3000
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert set(config["data"]) <= SETTINGS, set(config["data"]) - SETTINGS
    example = (DEPLOY / "kubernetes" / "tracehouse.env.example").read_text().splitlines()
    keys = {line.split("=")[0] for line in example if line and not line.startswith("#")}
    assert keys <= SETTINGS, keys - SETTINGS


def test_probes_point_at_routes_that_exist():
    from tracehouse.web.health import router as health
    from tracehouse.web.queues_api import router as queues

    web_routes = {getattr(route, "path", "") for route in [*health.routes, *queues.routes]}
    assert {"/api/public/health", "/api/ready"} <= web_routes
    worker_routes = {"/api/health", "/api/health/queue", "/api/ready", "/metrics"}  # workers.worker_health_app
    for deployment in (d for d in _kubernetes() if d["kind"] == "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        routes = worker_routes if "worker" in deployment["metadata"]["name"] else web_routes
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] in routes
