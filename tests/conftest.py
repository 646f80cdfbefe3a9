"""Shared fixtures: real services, embedded by default, the machine's servers when CI points at them.

- TRACEHOUSE_TEST_REDIS_URL: a real Redis (otherwise an embedded redis-server is started).
- TRACEHOUSE_TEST_DATABASE_URL: a real PostgreSQL (metadata tests then run on it as well).
chDB allows one data directory per process, so every in-process ClickHouse test shares one.
"""

from __future__ import annotations

import gc
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tracehouse.clickhouse import ClickHouse, migrate_clickhouse
from tracehouse.logging import configure_logging
from tracehouse.redis_embedded import EmbeddedRedis
from tracehouse.settings import Settings, load_settings

configure_logging("warning", "json")

# Tests must never pick up an operator's environment by accident.
for _name in (
    "CLICKHOUSE_URL",
    "CLICKHOUSE_EXPORT_URL",
    "REDIS_URL",
    "REDIS_CONNECTION_STRING",
    "DATABASE_URL",
    "LANGFUSE_S3_EVENT_UPLOAD_BUCKET",
    "LANGFUSE_WORKER_ROLE",
):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Collect after every test, so an unclosed client fails the test that leaked it (warnings are errors)."""
    yield
    gc.collect()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracehouse")


@pytest.fixture(scope="session")
def redis_url(session_dir: Path) -> Iterator[str]:
    url = os.environ.get("TRACEHOUSE_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(session_dir / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A bullmq key prefix of its own per test, so tests on a shared Redis never see each other."""
    import redis

    prefix = f"thtest-{secrets.token_hex(4)}"
    yield prefix
    from tracehouse.queues import bullmq_connection

    client = redis.Redis(**bullmq_connection(redis_url))
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def settings(session_dir: Path, redis_url: str) -> Settings:
    return load_settings(data_dir=session_dir / "data", redis_url=redis_url)


@pytest.fixture(scope="session")
async def clickhouse(settings: Settings) -> AsyncIterator[ClickHouse]:
    ch = ClickHouse.from_settings(settings)
    await migrate_clickhouse(ch)
    yield ch
    ch.close()


@contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, uniquely named PostgreSQL database for one test; dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"tracehouse_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def metadata_url(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL when CI gives one, else a SQLite file: the URL a second process can share."""
    admin_url = os.environ.get("TRACEHOUSE_TEST_DATABASE_URL")
    if not admin_url:
        yield f"sqlite:///{tmp_path / 'shared-metadata.db'}"
        return
    with fresh_postgres_database(admin_url) as url:
        yield url


@pytest.fixture(scope="module")
async def base_services(settings: Settings) -> AsyncIterator[Any]:
    """Every service, opened once per test module and migrated."""
    from tracehouse.runtime import migrate, open_services

    opened = await open_services(settings)
    await migrate(opened)
    yield opened
    await opened.close()


@pytest.fixture
async def services(base_services: Any, key_prefix: str) -> AsyncIterator[Any]:
    """The module's services with this test's own Redis key prefix (and producer) and metrics registry."""
    yield_services, close = prefixed(base_services, key_prefix)
    try:
        yield yield_services
    finally:
        await close()


def prefixed(base: Any, prefix: str, **settings_changes: Any) -> tuple[Any, Any]:
    """Services under their own Redis key prefix with a fresh metrics registry; returns (services, close)."""
    import dataclasses

    from tracehouse.metrics import Metrics
    from tracehouse.runtime import queue_producer

    settings = base.settings.model_copy(update={"redis_key_prefix": prefix, **settings_changes})
    producer = queue_producer(base.redis_url, settings)
    return dataclasses.replace(base, settings=settings, producer=producer, metrics=Metrics()), producer.close


@pytest.fixture
def project(services: Any) -> tuple[str, dict[str, str]]:
    """A fresh project and the Basic-auth headers (plus SDK headers) of a key for it."""
    import base64
    import uuid

    from tracehouse.metadata import create_api_key, create_project

    created = create_project(services.metadata, "test", project_id=f"p-{uuid.uuid4().hex[:10]}")
    key = create_api_key(services.metadata, created.id, salt=services.settings.salt)
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    return created.id, {
        "Authorization": f"Basic {token}",
        "x-langfuse-sdk-name": "python",
        "x_langfuse_sdk_version": "2.60.10",
    }


# --- moto S3 server on loopback (shared by blob and export tests) ---------------------------
ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret-value"
REGION = "us-east-1"

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret-value"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(s3_client: Any) -> str:
    name = f"th-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@contextmanager
def server_thread(
    base: Any, prefix: str, *, on_app: Callable[[Any], None] | None = None, **settings_changes: Any
) -> Iterator[str]:
    """A real `tracehouse` web server on a loopback port, on its own event loop in a thread.

    It shares the base services' ClickHouse, metadata and blob store (loop-independent) and opens its
    own Redis client and producer on its loop, so blocking clients (schemathesis, requests) can call it
    from the test's thread. `settings_changes` apply to the app and the server (limits, timeouts);
    `on_app` sees the app before it serves (to add a route or keep a handle). Yields the base URL.
    """
    import asyncio
    import dataclasses
    import threading

    from tracehouse.metrics import Metrics
    from tracehouse.queues import redis_client
    from tracehouse.runtime import queue_producer
    from tracehouse.web.app import create_app
    from tracehouse.web.server import build_server

    port = free_port()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        settings = base.settings.model_copy(update={"redis_key_prefix": prefix, **settings_changes})
        redis = redis_client(base.redis_url)
        producer = queue_producer(base.redis_url, settings)
        services = dataclasses.replace(base, settings=settings, redis=redis, producer=producer, metrics=Metrics())
        app = create_app(services)
        if on_app is not None:
            on_app(app)
        server = build_server(app, settings, host="127.0.0.1", port=port)
        holder["server"] = server
        task = asyncio.create_task(server.serve())
        try:
            while not server.started and not task.done():
                await asyncio.sleep(0.02)
            started.set()
            await task
        finally:
            await producer.close()
            await redis.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        holder["server"].should_exit = True
        thread.join(30)
