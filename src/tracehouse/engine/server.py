"""The engine process: owns the chDB directory and serves ClickHouse's HTTP interface on it.

chDB lets one process open a data directory. The engine is that process; every other tracehouse
process reaches the data over HTTP exactly as it reaches a ClickHouse server
(`CLICKHOUSE_URL=http://127.0.0.1:<port>`). A lock file next to the chDB directory makes a second
engine on the same directory fail at once with one line, instead of chDB's opaque BAD_ARGUMENTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import uvicorn

from tracehouse.engine import errors
from tracehouse.engine.admission import DEFAULT_MAX_WAIT_MS
from tracehouse.engine.errors import EngineError, load_error_names
from tracehouse.engine.handler import TAG_KEY, EngineApp, EngineState
from tracehouse.engine.policy import setting_number
from tracehouse.engine.pool import ChdbPool
from tracehouse.engine.querylog import QueryLog
from tracehouse.engine.quotas import QuotaTracker
from tracehouse.engine.users import cap_threads, load_users
from tracehouse.errors import TracehouseError
from tracehouse.logging import get_logger

log = get_logger(__name__)

# ClickHouse accepts URIs up to http_max_uri_size (1 MiB): query parameters travel in the URL.
MAX_REQUEST_HEAD_BYTES = (1 << 20) + (64 << 10)
KEEP_ALIVE_S = 10
GRACEFUL_SHUTDOWN_S = 3

# chDB's system.query_log (with ClickHouse's counters) besides the engine's own log; a week of it.
CHDB_CONFIG = """<clickhouse>
  <query_log>
    <database>system</database>
    <table>query_log</table>
    <flush_interval_milliseconds>1000</flush_interval_milliseconds>
    <ttl>event_date + INTERVAL 7 DAY DELETE</ttl>
  </query_log>
</clickhouse>
"""


CAP_SYS_NICE = 23  # linux/capability.h


def has_cap_sys_nice(status: Path = Path("/proc/self/status")) -> bool:
    """Whether this process may lower nice values (ClickHouse's condition for os_thread_priority)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError):
        pass
    return False


class EngineLocked(TracehouseError):
    pass


@dataclass(frozen=True)
class EngineOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8123
    users_file: Path | None = None
    max_concurrent_queries: int = 64
    query_log_size: int = 10_000
    background_wait_ms: int = DEFAULT_MAX_WAIT_MS  # admission.py: how long a background query yields

    @property
    def chdb_dir(self) -> Path:
        return (self.data_dir / "clickhouse").resolve()


@contextlib.contextmanager
def directory_lock(chdb_dir: Path) -> Iterator[None]:
    """An exclusive lock next to the chDB directory, held for the engine's life (released by the OS
    if the process dies, so a crash never leaves it stale)."""
    chdb_dir.parent.mkdir(parents=True, exist_ok=True)
    path = chdb_dir.with_name(chdb_dir.name + ".engine.lock")
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise EngineLocked(f"another tracehouse engine (pid {holder}) already serves {chdb_dir}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def open_state(options: EngineOptions) -> EngineState:
    users = cap_threads(load_users(options.users_file), os.cpu_count() or 1)
    for warning in users.warnings:
        log.warning("engine_users_file", source=users.source, detail=warning)
    profiles = {u.profile.name: u.profile for u in users.users.values()}
    niced = {name for name, p in profiles.items() if setting_number(p.settings.get("os_thread_priority"))}
    if niced and not has_cap_sys_nice():
        # ClickHouse applies os_thread_priority only with CAP_SYS_NICE and otherwise ignores it silently.
        log.warning(
            "engine_thread_priority_ignored",
            profiles=sorted(niced),
            detail="this process lacks CAP_SYS_NICE, so os_thread_priority has no effect: background queries "
            "run at the interactive class's OS priority (run the engine as root or with the SYS_NICE capability)",
        )
    options.chdb_dir.mkdir(parents=True, exist_ok=True)
    config = options.chdb_dir.with_name("clickhouse-engine.xml")
    config.write_text(CHDB_CONFIG)
    try:
        pool = ChdbPool(f"{options.chdb_dir}?config-file={config}")
    except EngineError as exc:
        raise TracehouseError(
            f"cannot open {options.chdb_dir} with chDB: {exc.message.splitlines()[0][:300]} "
            "(is a tracehouse process running embedded ClickHouse on this data directory?)"
        ) from None
    timezone = pool.control("SELECT timezone()").decode().strip()
    defaults = dict(
        line.split("\t", 1) for line in pool.control("SELECT name, value FROM system.settings").decode().splitlines()
    )
    return EngineState(
        pool=pool,
        users=users,
        query_log=QueryLog(options.query_log_size),
        quotas=QuotaTracker(),
        executor=ThreadPoolExecutor(options.max_concurrent_queries + 4, thread_name_prefix="engine-query"),
        control=ThreadPoolExecutor(2, thread_name_prefix="engine-control"),
        max_concurrent_queries=options.max_concurrent_queries,
        error_names=load_error_names(pool._control.raw),
        setting_defaults=defaults,
        timezone=timezone,
        display_name=socket.gethostname(),
        background_wait_s=options.background_wait_ms / 1000,
    )


class _Server(uvicorn.Server):
    """uvicorn would install its own signal handlers and re-raise the signal after shutdown; the
    engine handles SIGTERM/SIGINT itself, so chDB is closed before the process ends."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app: EngineApp, options: EngineOptions) -> _Server:
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http="h11",
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="off",
        access_log=False,
        log_level="warning",
        server_header=False,
    )
    return _Server(config)


async def serve(options: EngineOptions, state: EngineState) -> None:
    server = build_server(EngineApp(state), options)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(server.serve())
    # uvicorn offers no startup event to wait on.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if serving.done():
        await serving  # startup failed (e.g. the port is taken): uvicorn has said why
        raise TracehouseError(f"cannot listen on {options.host}:{options.port}")
    bound = _bound_port(server) or options.port
    print(f"engine listening on http://{options.host}:{bound}", flush=True)
    await asyncio.wait([serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    # Running queries end now (the clients get QUERY_WAS_CANCELLED) rather than after the grace period.
    await loop.run_in_executor(state.control, _kill_all, state)
    await serving


def _kill_all(state: EngineState) -> None:
    try:
        state.pool.kill_all(f'"{TAG_KEY}"')
    except EngineError as exc:
        log.warning("engine_kill_failed", error=exc.text)


def _bound_port(server: uvicorn.Server) -> int | None:
    for srv in getattr(server, "servers", []):
        for sock in srv.sockets:
            return int(sock.getsockname()[1])
    return None


def close_state(state: EngineState) -> None:
    state.executor.shutdown(wait=True, cancel_futures=True)
    state.control.shutdown(wait=True, cancel_futures=True)
    state.pool.close()


def run_engine(options: EngineOptions) -> None:
    """Serve until SIGTERM/SIGINT. Raises TracehouseError (one line) when it cannot start."""
    with directory_lock(options.chdb_dir):
        state = open_state(options)
        try:
            asyncio.run(serve(options, state))
        finally:
            close_state(state)
    sys.stdout.flush()


__all__ = ["EngineOptions", "EngineLocked", "errors", "run_engine"]
