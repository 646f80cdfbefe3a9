"""Which processors and crons each capability contributes, and starting the workers a role consumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from tracehouse.batch_export.storage import build_export_store
from tracehouse.batch_export.worker import batch_export_job, batch_export_processor, cleanup_cron
from tracehouse.capabilities import QUEUES
from tracehouse.cron import CronSpec, cron_processor, register_schedules
from tracehouse.export.crypto import SecretBox
from tracehouse.export.service import ExportConfig, ExportJob
from tracehouse.export.worker import (
    BATCH_EXPORT_QUEUE,
    PROCESSING_QUEUE,
    export_processor,
    export_schedule_cron,
    producer_enqueue,
)
from tracehouse.ingestion.service import INGESTION_QUEUE
from tracehouse.ingestion.worker import EntityLocks, IngestionProcessor
from tracehouse.ingestion.writer import ClickHouseWriter
from tracehouse.logging import get_logger
from tracehouse.pricing.service import pricing_service
from tracehouse.queues import Processor, QueueRunner, QueueSpec, queues_for_role
from tracehouse.queues.activity import ActivityTracker
from tracehouse.runtime import Services
from tracehouse.settings import WorkerRole
from tracehouse.usage.worker import usage_cron


def cron_specs(services: Services) -> list[CronSpec]:
    interval = timedelta(seconds=services.settings.export_schedule_interval_s)
    return [
        usage_cron(services.clickhouse),
        export_schedule_cron(services.metadata, producer_enqueue(services.producer), interval=interval),
        cleanup_cron(services.metadata, build_export_store(services.settings)),
    ]


def export_job(services: Services) -> ExportJob:
    return ExportJob(
        clickhouse=services.clickhouse,
        metadata=services.metadata,
        box=SecretBox(services.settings.encryption_key),
        config=ExportConfig.from_settings(services.settings),
        metrics=services.metrics,
        enqueue=producer_enqueue(services.producer),
    )


def ingestion_writer(services: Services) -> ClickHouseWriter:
    settings = services.settings
    return ClickHouseWriter(
        services.clickhouse,
        batch_size=settings.ingestion_write_batch_size,
        interval_ms=settings.ingestion_write_interval_ms,
        max_attempts=settings.ingestion_write_max_attempts,
        metrics=services.metrics,
    )


def build_processors(services: Services, writer: ClickHouseWriter) -> dict[str, Processor]:
    """Queue name -> processor, for every queue some capability processes."""
    processors: dict[str, Processor] = {
        INGESTION_QUEUE: IngestionProcessor(
            clickhouse=services.clickhouse,
            blobs=services.blobs,
            writer=writer,
            locks=EntityLocks(services.redis, services.settings.redis_key_prefix),
            metadata=services.metadata,
            metrics=services.metrics,
            history_chunk_keys=services.settings.ingestion_history_chunk_keys,
            pricing=pricing_service(services.metadata),
        ),
        PROCESSING_QUEUE: export_processor(export_job(services)),
        BATCH_EXPORT_QUEUE: batch_export_processor(
            batch_export_job(services.clickhouse, services.metadata, services.settings)
        ),
    }
    for spec in cron_specs(services):
        processors[spec.queue] = cron_processor(spec, services.metadata)
    return processors


def _with_overrides(spec: QueueSpec, services: Services) -> QueueSpec:
    settings = services.settings
    # Ingestion jobs mostly wait for the writer's batched flush, so many run at once.
    concurrency = settings.ingestion_queue_concurrency if spec.name == INGESTION_QUEUE else spec.concurrency
    return dataclasses.replace(
        spec,
        concurrency=concurrency,
        lock_duration_ms=settings.queue_lock_duration_ms or spec.lock_duration_ms,
        stalled_interval_ms=settings.queue_stalled_interval_ms or spec.stalled_interval_ms,
    )


def consumed_queues(services: Services, role: WorkerRole) -> list[str]:
    """Queues a worker of this role consumes: its role's queues, switched on, with a processor."""
    # Building processors opens nothing (the writer starts its timer on first write), so this is cheap.
    processors = build_processors(services, ingestion_writer(services))
    return [s.name for s in queues_for_role(role, QUEUES.values(), services.settings) if s.name in processors]


async def start_workers(
    services: Services,
    role: WorkerRole,
    processors: Mapping[str, Processor] | None = None,
    crons: list[CronSpec] | None = None,
) -> QueueRunner:
    settings = services.settings
    writer = ingestion_writer(services)
    processors = dict(processors if processors is not None else build_processors(services, writer))
    crons = crons if crons is not None else cron_specs(services)
    specs = [
        _with_overrides(s, services) for s in queues_for_role(role, QUEUES.values(), settings) if s.name in processors
    ]
    activity = ActivityTracker(services.redis, settings.redis_key_prefix)
    runner = QueueRunner(
        services.redis_connection,
        specs,
        processors,
        prefix=settings.redis_key_prefix,
        metrics=services.metrics,
        activity=activity,
    )
    runner.after_close.append(writer.close)
    await runner.start()
    consumed = set(runner.queue_names)
    # Only a process that consumes a cron's queue registers its schedule (upsert by id).
    await register_schedules(services.producer.queue, [c for c in crons if c.queue in consumed])
    get_logger("tracehouse.worker").info(
        "worker_started",
        role=role.value,
        queues=runner.queue_names,
        crons=[c.name for c in crons if c.queue in consumed],
    )
    return runner


def worker_health_app(services: Services, runner: QueueRunner) -> Any:
    """The worker's own HTTP endpoints (Langfuse's worker port, 3030): health, queue health, metrics."""
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from tracehouse.queues.health import check_queues

    app = FastAPI(title="tracehouse worker", docs_url=None, redoc_url=None, openapi_url=None)

    async def queue_health() -> JSONResponse:
        health = await check_queues(
            services.redis,
            services.settings.redis_key_prefix,
            queues=runner.queue_names,
            expected=runner.queue_names,
            stuck_after_s=services.settings.queue_stuck_threshold_minutes * 60,
            worker_running=runner.running,
            worker_concurrency=runner.concurrency,
            metrics=services.metrics,
        )
        return JSONResponse(health.body, status_code=200 if health.healthy else 503)

    app.get("/api/health")(queue_health)
    app.get("/api/health/queue")(queue_health)
    app.get("/api/ready")(queue_health)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
