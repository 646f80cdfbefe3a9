"""The `tracehouse` command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tracehouse import __version__
from tracehouse.batch_export.cli import app as batch_export_app
from tracehouse.errors import ConfigError, TracehouseError
from tracehouse.logging import configure_logging, get_logger
from tracehouse.metadata import (
    MetadataDB,
    create_api_key,
    create_project,
    ensure_default_project,
    ensure_init_project,
    list_api_keys,
    list_projects,
    revoke_api_key,
)
from tracehouse.runtime import Services, migrate, open_services
from tracehouse.settings import Settings, WorkerRole, load_settings
from tracehouse.workers import consumed_queues, start_workers, worker_health_app

T = TypeVar("T")

app = typer.Typer(
    help="tracehouse: a Langfuse-compatible data plane for LLM traces on ClickHouse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[env: PORT; default 3000]": plain text, not markup
)
projects_app = typer.Typer(help="Manage projects.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage project API keys (Langfuse pk-lf-/sk-lf- pairs).", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
app.add_typer(keys_app, name="keys")

HostOpt = Annotated[str | None, typer.Option(help="Interface to bind [env: TRACEHOUSE_HOST; default 127.0.0.1].")]
PortOpt = Annotated[int | None, typer.Option(help="Port to listen on [env: PORT; default 3000].")]
DataDirOpt = Annotated[
    Path | None, typer.Option(help="Where embedded data lives [env: TRACEHOUSE_DATA_DIR; default ./.tracehouse].")
]


def _settings(**overrides: Any) -> Settings:
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn operator-facing errors into one line on stderr and exit code 1."""
    try:
        return asyncio.run(make())
    except TracehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (TracehouseError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------
def bootstrap_projects(settings: Settings, metadata: MetadataDB) -> list[str]:
    """Headless init (LANGFUSE_INIT_*), else a default project on first start. Returns banner lines."""
    if settings.init_project_id:
        if not (settings.init_project_public_key and settings.init_project_secret_key):
            raise ValueError(
                "LANGFUSE_INIT_PROJECT_ID needs LANGFUSE_INIT_PROJECT_PUBLIC_KEY and LANGFUSE_INIT_PROJECT_SECRET_KEY"
            )
        project, created = ensure_init_project(
            metadata,
            project_id=settings.init_project_id,
            name=settings.init_project_name or settings.init_project_id,
            public_key=settings.init_project_public_key,
            secret_key=settings.init_project_secret_key,
            salt=settings.salt,
        )
        get_logger("tracehouse.bootstrap").info("init_project", project_id=project.id, created=created)
        return [
            f"  project           {project.name} ({project.id})",
            f"  LANGFUSE_PUBLIC_KEY={settings.init_project_public_key}",
            "  LANGFUSE_SECRET_KEY=<from LANGFUSE_INIT_PROJECT_SECRET_KEY>",
        ]
    project, key = ensure_default_project(metadata, salt=settings.salt)
    if key is not None:
        return [
            f"  project           {project.name} ({project.id})",
            f"  LANGFUSE_PUBLIC_KEY={key.public_key}",
            f"  LANGFUSE_SECRET_KEY={key.secret_key}",
            "  (the secret key is shown only now; `tracehouse keys create` makes another)",
        ]
    keys = [k for k in list_api_keys(metadata, project.id) if k.revoked_at is None]
    lines = [f"  project           {project.name} ({project.id})"]
    if keys:
        lines.append(f"  LANGFUSE_PUBLIC_KEY={keys[0].public_key}  (secret {keys[0].display_secret_key})")
    lines.append(f"  new key pair:     tracehouse keys create --project {project.id}")
    return lines


# ---------------------------------------------------------------------------------------------
# long-running commands
# ---------------------------------------------------------------------------------------------
@app.command()
def serve(
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    single_process: Annotated[
        bool, typer.Option(help="Web and every worker in this one process (tests, tiny machines).")
    ] = False,
) -> None:
    """Run the whole system on embedded defaults: the engine (chDB over ClickHouse's HTTP protocol),
    web, an ingestion worker and an export worker as separate processes, supervised.

    Unset server URLs mean embedded chDB, SQLite, Redis and a local blob folder under the data
    directory, so nothing needs installing. Migrates on start and prints the URL and API keys.
    """
    settings = _settings(host=host, port=port, data_dir=data_dir)
    if single_process:
        _run(lambda: _serve(settings, role=WorkerRole.ALL, with_workers=True, banner=True))
    else:
        from tracehouse.supervised import serve_supervised

        _run(lambda: serve_supervised(settings, bootstrap=bootstrap_projects, banner=_banner_text))


@app.command()
def web(host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the web API only (ingestion endpoints, public read API, health, metrics)."""
    settings = _settings(host=host, port=port)
    _run(lambda: _serve(settings, role=settings.worker_role, with_workers=False, banner=False))


@app.command()
def worker(
    role: Annotated[
        WorkerRole | None,
        typer.Option(help="Which queues to consume [env: LANGFUSE_WORKER_ROLE; default all]."),
    ] = None,
) -> None:
    """Run queue workers: `ingestion` consumes ingestion-side queues, `export` the export queues, `all` both."""
    settings = _settings(worker_role=role)
    _run(lambda: _worker(settings))


async def _serve(settings: Settings, *, role: WorkerRole, with_workers: bool, banner: bool) -> None:
    from tracehouse.web.app import create_app
    from tracehouse.web.server import build_server

    services = await open_services(settings)
    try:
        if banner:
            await migrate(services)
        lines = await asyncio.to_thread(bootstrap_projects, settings, services.metadata) if banner else []

        @asynccontextmanager
        async def workers(_app: Any) -> AsyncIterator[None]:
            runner = await start_workers(services, role) if with_workers else None
            try:
                yield
            finally:
                if runner is not None:
                    await runner.shutdown(settings.shutdown_timeout_s)

        api = create_app(services, background=workers, expected_queues=consumed_queues(services, WorkerRole.ALL))
        server = build_server(api, settings, host=settings.host, port=settings.port)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.handle_exit, sig, None)
        if banner:
            asyncio.ensure_future(_print_banner(server, settings, lines))
        await server.serve()
    finally:
        await services.close()


async def _print_banner(server: Any, settings: Settings, lines: list[str]) -> None:
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.05)
    print(_banner_text(settings, lines), flush=True)


def _banner_text(settings: Settings, lines: list[str]) -> str:
    url = f"http://{settings.host}:{settings.port}"
    text = [
        f"tracehouse {__version__} is running at {url}",
        f"  LANGFUSE_HOST={url}",
        *lines,
        f"  data directory    {settings.data_dir.resolve()}",
        "  health            " + url + "/api/public/health",
        "Press Ctrl-C to stop.",
    ]
    return "\n".join(text)


def _lower_priority(settings: Settings) -> None:
    nice = settings.effective_worker_nice
    if nice:
        os.nice(nice)  # lowering our own priority needs no privilege
    get_logger("tracehouse.worker").info("worker_priority", role=settings.worker_role.value, nice=os.nice(0))


async def _worker(settings: Settings) -> None:
    services = await open_services(settings)
    _lower_priority(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        runner = await start_workers(services, settings.worker_role)
        health = await _start_health_server(services, runner)
        await stop.wait()
        if health is not None:
            health.should_exit = True
        get_logger("tracehouse.worker").info("worker_stopping", timeout_s=settings.shutdown_timeout_s)
        clean = await runner.shutdown(settings.shutdown_timeout_s)
        get_logger("tracehouse.worker").info("worker_stopped", clean=clean)
    finally:
        await services.close()


async def _start_health_server(services: Services, runner: Any) -> Any:
    """The worker's health/metrics port (TRACEHOUSE_WORKER_PORT, 3030 as Langfuse's; 0 disables)."""
    settings = services.settings
    if not settings.worker_port:
        return None
    from tracehouse.web.server import build_server

    server = build_server(
        worker_health_app(services, runner),
        settings,
        host=settings.host,
        port=settings.worker_port,
        lifespan="off",
        timeout_graceful_shutdown=None,
    )
    asyncio.ensure_future(server.serve())
    get_logger("tracehouse.worker").info(
        "worker_health_listening", url=f"http://{settings.host}:{settings.worker_port}/api/health"
    )
    return server


# ---------------------------------------------------------------------------------------------
# one-shot commands
# ---------------------------------------------------------------------------------------------
from tracehouse.engine.cli import engine as _engine_command  # noqa: E402 - grouped with the long-running commands

app.command("engine")(_engine_command)


@app.command("migrate")
def migrate_cmd(data_dir: DataDirOpt = None) -> None:
    """Create or upgrade the metadata and ClickHouse schemas (safe to run repeatedly), then apply
    LANGFUSE_INIT_* if set."""
    settings = _settings(data_dir=data_dir)

    async def go() -> None:
        services = await open_services(settings)
        try:
            applied = await migrate(services)
            if settings.init_project_id:
                await asyncio.to_thread(bootstrap_projects, settings, services.metadata)
        finally:
            await services.close()
        for target, names in applied.items():
            typer.echo(f"{target}: " + (", ".join(names) if names else "up to date"))

    _run(go)


def _metadata(settings: Settings, *, migrate: bool = False) -> MetadataDB:
    """The metadata database alone. Commands that change it migrate it first; read-only ones never
    migrate and say so when the schema is not current."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = MetadataDB(settings.metadata_url)
    try:
        db.ping()
        if migrate:
            db.migrate()
        elif db.current_revision() != db.head_revision():
            raise ConfigError(f"the metadata database at {db.display_url} is not migrated; run `tracehouse migrate`")
    except BaseException:
        db.dispose()
        raise
    return db


def _with_db(settings: Settings, use: Callable[[MetadataDB], T], *, migrate: bool = False) -> T:
    """Open the metadata database, run `use` on it, close it; errors become one line (exit 1)."""

    def go() -> T:
        db = _metadata(settings, migrate=migrate)
        try:
            return use(db)
        finally:
            db.dispose()

    return _guard(go)


@projects_app.command("create")
def projects_create(
    name: str,
    project_id: Annotated[str | None, typer.Option("--id", help="Project id (default: generated).")] = None,
    with_key: Annotated[bool, typer.Option(help="Also create an API key pair.")] = True,
) -> None:
    """Create a project (and, by default, a key pair for it)."""
    settings = _settings()

    def go(db: MetadataDB) -> None:
        project = create_project(db, name, project_id=project_id)
        typer.echo(f"project {project.id} {project.name}")
        if with_key:
            key = create_api_key(db, project.id, salt=settings.salt)
            typer.echo(f"LANGFUSE_PUBLIC_KEY={key.public_key}\nLANGFUSE_SECRET_KEY={key.secret_key}")

    _with_db(settings, go, migrate=True)


@projects_app.command("list")
def projects_list() -> None:
    """List projects."""
    settings = _settings()
    for project in _with_db(settings, lambda db: list_projects(db)):
        typer.echo(f"{project.id}\t{project.name}\t{project.created_at.isoformat()}")


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project id.")],
    note: Annotated[str | None, typer.Option(help="A note to recognise the key by.")] = None,
) -> None:
    """Create a key pair; the secret is printed once and stored only as a hash."""
    settings = _settings()
    key = _with_db(settings, lambda db: create_api_key(db, project, salt=settings.salt, note=note), migrate=True)
    typer.echo(f"LANGFUSE_PUBLIC_KEY={key.public_key}\nLANGFUSE_SECRET_KEY={key.secret_key}")


@keys_app.command("list")
def keys_list(project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None) -> None:
    """List keys (secrets are never shown, only their last characters)."""
    settings = _settings()
    for key in _with_db(settings, lambda db: list_api_keys(db, project)):
        state = "revoked" if key.revoked_at else "active"
        typer.echo(f"{key.id}\t{key.project_id}\t{key.public_key}\t{key.display_secret_key}\t{state}")


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="Key id or public key.")]) -> None:
    """Revoke a key; it stops authenticating within a minute (the web's key cache)."""
    settings = _settings()
    if not _with_db(settings, lambda db: revoke_api_key(db, key), migrate=True):
        typer.echo(f"error: no key {key!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key}")


dlq_app = typer.Typer(help="Ingestion writes that exhausted their retries (dead letters).", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(all_: Annotated[bool, typer.Option("--all", help="Include replayed entries.")] = False) -> None:
    """Open dead letters: project, table, entity id, raw batch, attempts, last error."""
    from tracehouse.ingestion.service import list_dead_letters

    settings = _settings()
    letters = _with_db(settings, lambda db: list_dead_letters(db, include_replayed=all_))
    typer.echo("id\tproject\ttable\tentity\tattempts\tlast_failed_at\treplayed_at\tbatch\terror")
    for d in letters:
        replayed = d.replayed_at.isoformat() if d.replayed_at else "-"
        typer.echo(
            f"{d.id}\t{d.project_id}\t{d.table_name}\t{d.entity_id}\t{d.attempts}\t"
            f"{d.last_failed_at.isoformat()}\t{replayed}\t{d.batch_key}\t{d.last_error[:200]}"
        )
    typer.echo(f"{len(letters)} dead letter(s)", err=True)


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[int] | None, typer.Argument(help="Dead-letter ids (default: all open).")] = None,
) -> None:
    """Re-run open dead letters from their raw batches (the ingestion workers pick them up)."""
    from tracehouse.ingestion.service import replay_dead_letters
    from tracehouse.queues import ping_redis
    from tracehouse.runtime import queue_producer

    settings = _settings()
    if settings.redis_url is None:
        typer.echo(
            "error: dlq replay needs REDIS_URL (the queue the workers consume); with `serve`, "
            "use the same REDIS_URL for both",
            err=True,
        )
        raise typer.Exit(1)
    redis_url = settings.redis_url

    async def go() -> int:
        await ping_redis(redis_url)
        producer = queue_producer(redis_url, settings)
        db = _metadata(settings)
        try:
            return await replay_dead_letters(db, producer, ids or None)
        finally:
            await producer.close()
            db.dispose()

    typer.echo(f"re-enqueued {_run(go)} raw batch(es)")


@app.command()
def synth(
    traces: Annotated[int, typer.Option(help="How many traces to generate.")] = 1000,
    spans_per_trace: Annotated[int, typer.Option(help="Observations per trace (spans, generations, tools).")] = 4,
    payload_bytes: Annotated[int, typer.Option(help="Approximate size of each input/output.")] = 300,
    batch_events: Annotated[int, typer.Option(help="Events per ingestion request.")] = 100,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same ids).")] = 42,
    host: Annotated[str, typer.Option(envvar="LANGFUSE_HOST", help="tracehouse base URL.")] = "http://127.0.0.1:3000",
    public_key: Annotated[str, typer.Option(envvar="LANGFUSE_PUBLIC_KEY", help="Project public key.")] = "",
    secret_key: Annotated[str, typer.Option(envvar="LANGFUSE_SECRET_KEY", help="Project secret key.")] = "",
) -> None:
    """Send realistic synthetic traces (nested spans, generations with usage and cost, scores,
    sessions, users, environments) through the public ingestion endpoint."""
    import time as _time

    from tracehouse.synth import SynthConfig, events_per_trace, send

    if not public_key or not secret_key:
        typer.echo("error: set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY (or --public-key/--secret-key)", err=True)
        raise typer.Exit(1)
    config = SynthConfig(
        traces=traces,
        spans_per_trace=spans_per_trace,
        payload_bytes=payload_bytes,
        batch_events=batch_events,
        seed=seed,
    )
    expected = traces * events_per_trace(spans_per_trace)
    started = _time.perf_counter()
    with typer.progressbar(length=expected, label="events sent") as bar:
        try:
            stats = asyncio.run(
                send(host, public_key, secret_key, config, concurrency=concurrency, on_batch=bar.update)
            )
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback
            typer.echo(f"\nerror: {exc}", err=True)
            raise typer.Exit(1) from None
    elapsed = _time.perf_counter() - started
    typer.echo(
        f"sent {stats.events} events in {stats.batches} requests in {elapsed:.1f}s "
        f"({stats.events / elapsed:,.0f} events/s); rejected {stats.rejected}; "
        f"request latency p50 {stats.median_ms:.1f} ms, p95 {stats.percentile(0.95):.1f} ms"
    )


export_app = typer.Typer(help="Bulk export to object storage.", no_args_is_help=True)
integrations_app = typer.Typer(
    help="Per-project export destinations (Langfuse's blob-storage integrations).", no_args_is_help=True
)
export_app.add_typer(integrations_app, name="integrations")
app.add_typer(export_app, name="export")
app.add_typer(batch_export_app, name="batch-export")


@integrations_app.command("set")
def integrations_set(
    project: Annotated[str, typer.Option(help="Project id.")],
    type_: Annotated[
        str, typer.Option("--type", help="S3, S3_COMPATIBLE, GOOGLE_CLOUD_STORAGE, AZURE_BLOB_STORAGE or LOCAL.")
    ],
    bucket: Annotated[str, typer.Option(help="Bucket / container (LOCAL: a folder under <data dir>/exports).")],
    region: Annotated[str, typer.Option(help="Region.")] = "auto",
    endpoint: Annotated[str | None, typer.Option(help="Custom endpoint (S3-compatible).")] = None,
    access_key_id: Annotated[str | None, typer.Option(help="Access key id.")] = None,
    secret_access_key: Annotated[
        str | None,
        typer.Option(envvar="TRACEHOUSE_EXPORT_SECRET_ACCESS_KEY", help="Secret (prefer the environment variable)."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Key prefix, ending in '/'.")] = "",
    frequency: Annotated[str, typer.Option(help="every_15_minutes, hourly, daily or weekly.")] = "hourly",
    file_type: Annotated[str, typer.Option(help="PARQUET, JSONL or CSV.")] = "PARQUET",
    mode: Annotated[str, typer.Option(help="FULL_HISTORY, FROM_TODAY or FROM_CUSTOM_DATE.")] = "FULL_HISTORY",
    start_date: Annotated[datetime | None, typer.Option(help="With FROM_CUSTOM_DATE (UTC).")] = None,
    force_path_style: Annotated[bool, typer.Option(help="Path-style S3 URLs.")] = False,
    enabled: Annotated[bool, typer.Option(help="Export on schedule.")] = True,
) -> None:
    """Create or replace a project's export destination. The secret is stored encrypted (ENCRYPTION_KEY)."""
    from datetime import UTC

    from pydantic import ValidationError

    from tracehouse.export.crypto import SecretBox
    from tracehouse.export.egress import EgressRule
    from tracehouse.export.integrations import IntegrationRequest, check_destination, upsert_integration

    settings = _settings()
    try:
        request = IntegrationRequest.model_validate(
            {
                "projectId": project,
                "type": type_,
                "bucketName": bucket,
                "region": region,
                "endpoint": endpoint,
                "accessKeyId": access_key_id,
                "secretAccessKey": secret_access_key,
                "prefix": prefix,
                "exportFrequency": frequency,
                "fileType": file_type,
                "exportMode": mode,
                "forcePathStyle": force_path_style,
                "enabled": enabled,
                "exportStartDate": start_date.replace(tzinfo=UTC) if start_date else None,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        typer.echo(
            f"error: {'.'.join(str(p) for p in first['loc']) or 'integration'}: "
            f"{str(first['msg']).removeprefix('Value error, ')}",
            err=True,
        )
        raise typer.Exit(1) from None

    async def check() -> None:
        # The operator at the server's shell acts as the admin key: the allowlist applies.
        await check_destination(request, EgressRule(settings.export_allowed_destinations), admin=True)

    _run(check)  # a refused endpoint: one line on stderr, exit 1 (a missing project too, from the upsert)
    view = _with_db(
        settings,
        lambda db: upsert_integration(db, SecretBox(settings.encryption_key), request, internal_allowed=True),
        migrate=True,
    ).model_dump(by_alias=True)
    typer.echo(
        f"export for {view['projectId']}: {view['type']} {view['bucketName']} {view['prefix']} "
        f"{view['exportFrequency']} {view['fileType']} {'enabled' if view['enabled'] else 'disabled'}"
    )


@integrations_app.command("list")
def integrations_list(project: Annotated[str | None, typer.Option(help="Only this project.")] = None) -> None:
    """Export destinations (secrets are never shown)."""
    from tracehouse.export.integrations import list_integrations, status_view

    settings = _settings()
    for row in _with_db(settings, lambda db: list_integrations(db, project)):
        status = status_view(row).model_dump(by_alias=True)
        typer.echo(
            f"{row.project_id}\t{row.type}\t{row.bucket_name}\t{row.prefix}\t{row.export_frequency}\t"
            f"{row.file_type}\t{status['syncStatus']}\tlast={status['lastSyncAt'] or '-'}"
        )


@integrations_app.command("delete")
def integrations_delete(project: Annotated[str, typer.Option(help="Project id.")]) -> None:
    """Remove a project's export destination (exported files stay where they are)."""
    from tracehouse.export.integrations import delete_integration

    settings = _settings()
    if not _with_db(settings, lambda db: delete_integration(db, project), migrate=True):
        typer.echo(f"error: no export integration for project {project!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"deleted export integration of {project}")


@export_app.command("status")
def export_status(
    project: Annotated[str | None, typer.Option(help="Only this project.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Export progress per project: exported-until watermark, lag, last job, last error, next run."""
    import json as _json
    from datetime import UTC

    from tracehouse.export.integrations import list_integrations, progress_view

    settings = _settings()
    now = datetime.now(UTC)
    views = [
        progress_view(r, now).model_dump(by_alias=True)
        for r in _with_db(settings, lambda db: list_integrations(db, project))
    ]
    if json_:
        typer.echo(_json.dumps({"data": views}, indent=2))
        return
    if not views:
        typer.echo("no export integrations" + (f" for project {project!r}" if project else ""))
    for v in views:
        job = v["lastJob"]
        typer.echo(
            f"{v['projectId']}: {v['syncStatus']}; exported until {v['exportedUntil'] or '-'} "
            f"(lag {v['lagMinutes'] if v['lagMinutes'] is not None else '-'} min); last job "
            f"{job['durationMs'] if job['durationMs'] is not None else '-'} ms, {job['rows'] or 0} rows, "
            f"{job['files'] or 0} files; next run {v['nextRunAt'] or '-'}"
            + (f"; last error: {v['lastError']}" if v["lastError"] else "")
        )


@export_app.command("verify")
def export_verify(
    project: Annotated[str, typer.Option(help="Project id.")],
    from_: Annotated[datetime | None, typer.Option("--from", help="Only windows ending after this (UTC).")] = None,
    to: Annotated[datetime | None, typer.Option(help="Only windows starting before this (UTC).")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Reconcile the project's manifested export files against ClickHouse; exit 1 on any mismatch."""
    import json as _json
    from datetime import UTC

    from tracehouse.clickhouse import ClickHouse
    from tracehouse.export.crypto import SecretBox
    from tracehouse.export.destination import destination_store
    from tracehouse.export.egress import EgressProxy, EgressRule
    from tracehouse.export.state import load_integration
    from tracehouse.export.verify import verify_export

    settings = _settings()
    integration = _with_db(settings, lambda db: load_integration(db, SecretBox(settings.encryption_key), project))
    if integration is None:
        typer.echo(f"error: no export integration for project {project!r}", err=True)
        raise typer.Exit(1)

    async def go() -> Any:
        # The destination is read through the egress proxy, under the same rule the export job uses.
        rule = EgressRule(settings.export_allowed_destinations)
        clickhouse = await asyncio.to_thread(ClickHouse.from_settings, settings)
        try:
            async with EgressProxy(rule, internal=integration.internal_endpoint_allowed) as egress:
                proxy_url = None if integration.type == "LOCAL" else egress.url
                return await verify_export(
                    clickhouse,
                    destination_store(integration, settings.data_dir, proxy_url=proxy_url),
                    project,
                    start=from_.replace(tzinfo=UTC) if from_ else None,
                    end=to.replace(tzinfo=UTC) if to else None,
                )
        finally:
            clickhouse.close()

    report = _run(go)
    if json_:
        typer.echo(_json.dumps(report.as_json(), indent=2))
    else:
        covered = report.covered.as_json() if report.covered else None
        typer.echo(
            f"{project}: {report.windows} windows"
            + (f" covering {covered['start']} .. {covered['end']}" if covered else "")
        )
        for name, t in report.tables.items():
            typer.echo(
                f"  {name}: {t.current_rows} current rows, {t.exported_rows} exported, "
                f"{len(t.missing)} missing, {len(t.duplicated)} duplicated"
                + (f" (missing e.g. {', '.join(t.missing[:5])})" if t.missing else "")
                + (f" (duplicated e.g. {', '.join(t.duplicated[:5])})" if t.duplicated else "")
            )
        for gap in report.gaps:
            typer.echo(f"  gap: {gap}")
        for bad in report.bad_files:
            typer.echo(f"  bad file: {bad}")
        typer.echo("OK" if report.ok else "MISMATCH")
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def doctor(json_: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """Check every dependency, show this role's queues, and print the settings ClickHouse applies in
    each workload class (one probe query each); exit 1 when something is down."""
    import json as _json

    from tracehouse.doctor import diagnose

    settings = _settings()

    async def go() -> Any:
        services = await open_services(settings)
        try:
            return await diagnose(services, settings.worker_role.value, consumed_queues(services, settings.worker_role))
        finally:
            await services.close()

    report = _run(go)
    if json_:
        typer.echo(_json.dumps(report.as_json(), indent=2))
    else:
        for name, state in report.dependencies.items():
            typer.echo(f"{name:<12} {state}")
        typer.echo(f"role         {report.role}: {', '.join(report.queues) or 'no queues'}")
        for probe in report.classes:
            applied = ", ".join(f"{k}={v}" for k, v in probe.applied.items())
            typer.echo(f"{probe.workload:<12} {probe.target} as {probe.user or '-'}: {probe.error or applied}")
        for warning in report.warnings:
            typer.echo(f"warning: {warning}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("usage")
def usage_cmd(
    project: Annotated[str, typer.Option(help="Project id.")],
    from_: Annotated[datetime | None, typer.Option("--from", help="Start hour (inclusive, UTC).")] = None,
    to: Annotated[datetime | None, typer.Option(help="End hour (exclusive, UTC).")] = None,
) -> None:
    """Hourly traces / observations / scores of a project, as written by the usage-metering cron."""
    from tracehouse.usage.service import usage_for_project

    settings = _settings()
    rows = _with_db(settings, lambda db: usage_for_project(db, project, from_, to))
    typer.echo("hour\ttraces\tobservations\tscores")
    for row in rows:
        typer.echo(f"{row.hour.isoformat()}\t{row.traces}\t{row.observations}\t{row.scores}")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit()


def main() -> None:
    # Config errors raised while building settings surface here as one line, not a traceback.
    try:
        app()
    except TracehouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
