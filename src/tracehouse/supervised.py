"""`tracehouse serve` on the embedded defaults: the production topology on one machine.

Order: the embedded Redis (unless REDIS_URL), the engine (unless CLICKHOUSE_URL; chDB behind
ClickHouse's HTTP protocol, with the users and profiles of clickhouse-users.xml and passwords made up
for this run), migrations and the first project, then `web`, an ingestion worker and an export
worker, each its own process talking to the engine as its own ClickHouse user. The banner is
printed once the web process answers.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import httpx

from tracehouse.errors import ConfigError, DependencyUnavailable
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.redis_embedded import EmbeddedRedis
from tracehouse.runtime import migrate, open_services
from tracehouse.settings import Settings
from tracehouse.supervisor import ChildSpec, Supervisor

ENGINE_HOST = "127.0.0.1"
CLASS_USERS = {  # environment variable -> (engine user, its password variable in clickhouse-users.xml)
    "CLICKHOUSE_URL": ("tracehouse_interactive", "TRACEHOUSE_CH_INTERACTIVE_PASSWORD"),
    "TRACEHOUSE_CLICKHOUSE_INGESTION_URL": ("tracehouse_ingestion", "TRACEHOUSE_CH_INGESTION_PASSWORD"),
    "CLICKHOUSE_EXPORT_URL": ("tracehouse_export", "TRACEHOUSE_CH_EXPORT_PASSWORD"),
}


def users_file() -> Path:
    """The users and profiles shipped with tracehouse (deploy/clickhouse-users.xml is the same file)."""
    return Path(str(resources.files("tracehouse.engine") / "clickhouse-users.xml"))


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


async def _until_answers(url: str, alive: Callable[[], bool], what: str, timeout_s: float = 90) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while asyncio.get_running_loop().time() < deadline:
            if not alive():
                raise DependencyUnavailable(what, url, "the process exited while starting (see its log above)")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise DependencyUnavailable(what, url, f"did not answer within {timeout_s:.0f} s")


async def serve_supervised(
    settings: Settings,
    *,
    bootstrap: Callable[[Settings, MetadataDB], list[str]],
    banner: Callable[[Settings, list[str]], str],
) -> None:
    log = get_logger("tracehouse.serve")
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if _port_taken(settings.host, settings.port):
        raise ConfigError(f"PORT={settings.port} is already in use on {settings.host}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    supervisor = Supervisor()
    embedded_redis: EmbeddedRedis | None = None
    try:
        redis_url = settings.redis_url
        if redis_url is None:
            embedded_redis = EmbeddedRedis(data_dir / "redis")
            await asyncio.to_thread(embedded_redis.start)
            redis_url = embedded_redis.url
        env = {
            "TRACEHOUSE_DATA_DIR": str(data_dir),
            "REDIS_URL": redis_url,
            "TRACEHOUSE_HOST": settings.host,
            "PORT": str(settings.port),
            "TRACEHOUSE_WORKER_PORT": "0",  # several workers on one host; the web's queue health covers them
        }
        admin_url = settings.clickhouse_url
        if settings.clickhouse_url is None:
            class_urls, admin_url = await _start_engine(supervisor, env, data_dir)
            env.update(class_urls)
        prepared = settings.model_copy(update={"clickhouse_url": admin_url, "redis_url": redis_url})
        banner_lines = await _prepare(prepared, bootstrap)
        for name, args in (
            ("web", ("web",)),
            ("worker-ingestion", ("worker", "--role", "ingestion")),
            ("worker-export", ("worker", "--role", "export")),
        ):
            supervisor.start(ChildSpec(name, args, env))
        await _until_answers(
            f"http://{settings.host}:{settings.port}/api/public/health",
            lambda: supervisor.alive("web"),
            "tracehouse web",
        )
        print(banner(settings, banner_lines), flush=True)
        log.info("serve_started", children=supervisor.pids())
        await supervisor.watch(stop)
    finally:
        await asyncio.to_thread(supervisor.stop, settings.shutdown_timeout_s)
        if embedded_redis is not None:
            await asyncio.to_thread(embedded_redis.stop)


async def _start_engine(supervisor: Supervisor, env: dict[str, str], data_dir: Path) -> tuple[dict[str, str], str]:
    """The engine child; returns each workload class's URL (its own user) and the admin URL."""
    port = _free_port(ENGINE_HOST)
    passwords = {variable: secrets.token_hex(16) for _, variable in CLASS_USERS.values()}
    args = (
        "engine",
        "--data-dir",
        str(data_dir),
        "--host",
        ENGINE_HOST,
        "--port",
        str(port),
        "--users-file",
        str(users_file()),
    )
    supervisor.start(ChildSpec("engine", args, {**env, **passwords}, stop_last=True))
    await _until_answers(f"http://{ENGINE_HOST}:{port}/ping", lambda: supervisor.alive("engine"), "the engine")
    urls = {
        variable: f"http://{user}:{passwords[secret]}@{ENGINE_HOST}:{port}"
        for variable, (user, secret) in CLASS_USERS.items()
    }
    # Migrations and bootstrap run as `default` (loopback only, no profile limits), as an operator would.
    return urls, f"http://default@{ENGINE_HOST}:{port}"


async def _prepare(settings: Settings, bootstrap: Callable[[Settings, MetadataDB], list[str]]) -> list[str]:
    """Migrate, create the first project; the banner lines (URL and keys) it returns."""
    services = await open_services(settings)
    try:
        await migrate(services)
        return await asyncio.to_thread(bootstrap, settings, services.metadata)
    finally:
        await services.close()
