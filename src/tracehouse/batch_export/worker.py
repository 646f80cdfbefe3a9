"""Queue side of batch exports: the export job's processor and the exactly-once expiry cron.

`batch-export-queue` (Langfuse's name) is declared with the other export queues in
`export/worker.py`; this module declares the cleanup cron's queue. Both belong to the export role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tracehouse.batch_export.notify import Mailer
from tracehouse.batch_export.service import BatchExportJob, JobConfig, delete_records, expired_records
from tracehouse.batch_export.storage import ExportStore, build_export_store
from tracehouse.clickhouse import ClickHouse
from tracehouse.cron import CronSpec
from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.queues import QueueSpec, RoleGroup, retry_options
from tracehouse.settings import Settings

CLEANUP_QUEUE = "batch-export-cleanup-queue"
CLEANUP_CRON = "batch-export-cleanup"

QUEUES = [QueueSpec(CLEANUP_QUEUE, RoleGroup.EXPORT, job_options=retry_options(3, 5_000))]


def batch_export_job(clickhouse: ClickHouse, metadata: MetadataDB, settings: Settings) -> BatchExportJob:
    """The job over the runtime's clients (blocking: building the store may create its folder)."""
    return BatchExportJob(
        clickhouse=clickhouse,
        metadata=metadata,
        store=build_export_store(settings),
        mailer=Mailer.from_settings(settings),
        config=JobConfig.from_settings(settings),
    )


def batch_export_processor(job_runner: BatchExportJob) -> Callable[[Any, str], Awaitable[dict[str, Any]]]:
    async def process(job: Any, token: str) -> dict[str, Any]:
        return await job_runner.run(str(job.data["batchExportId"]), job)

    return process


def cleanup_cron(
    metadata: MetadataDB, store: ExportStore, *, period: timedelta = timedelta(hours=1), repeat: dict | None = None
) -> CronSpec:
    """Once per period across every export worker: delete the files and records that expired.

    Deleting a file is idempotent, so it happens in `compute` (a run whose commit loses is harmless
    to repeat); the records go in the period's commit, with the period's bookkeeping."""
    log = get_logger("tracehouse.batch_export")

    async def compute(start: datetime, end: datetime) -> list[str]:
        expired = await asyncio.to_thread(expired_records, metadata, end)
        for export_id, key in expired:
            if key is not None:
                await store.blobs.delete(key)
            log.info("batch_export_expired", exportId=export_id, key=key)
        return [export_id for export_id, _ in expired]

    def apply(session: Session, start: datetime, end: datetime, export_ids: list[str]) -> None:
        delete_records(session, export_ids)

    return CronSpec(
        name=CLEANUP_CRON,
        queue=CLEANUP_QUEUE,
        period=period,
        repeat=repeat or {"pattern": "20 * * * *"},
        compute=compute,
        apply=apply,
        skip_missed=True,  # one run covers every expiry up to now: missed periods add nothing
    )
