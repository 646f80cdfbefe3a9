"""Queue side of scheduled exports: the scheduler cron and the per-project processing job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tracehouse.cron import CronSpec
from tracehouse.export.integrations import due_integrations
from tracehouse.export.service import Enqueue, ExportJob, job_id
from tracehouse.metadata import MetadataDB
from tracehouse.queues import QueueProducer, QueueSpec, RoleGroup, retry_options

SCHEDULE_QUEUE = "blobstorage-integration-queue"
PROCESSING_QUEUE = "blobstorage-integration-processing-queue"
SCHEDULE_CRON = "blob-storage-export-schedule"
PROCESSING_JOB = "BlobStorageIntegrationProcessingJob"
BATCH_EXPORT_QUEUE = "batch-export-queue"

QUEUES = [
    QueueSpec(SCHEDULE_QUEUE, RoleGroup.EXPORT, job_options=retry_options(5, 5_000)),
    QueueSpec(
        PROCESSING_QUEUE,
        RoleGroup.EXPORT,
        lock_duration_ms=60_000,
        stalled_interval_ms=120_000,
        max_stalled_count=3,
        # Job ids are "<project>-<cursor>"; a finished job must not keep its id, or the next
        # enqueue for the same cursor would be ignored and the project's export would stall
        # (the fork's incident). The integration row keeps the last error instead.
        job_options={**retry_options(5, 30_000), "removeOnComplete": True, "removeOnFail": True},
    ),
    QueueSpec(BATCH_EXPORT_QUEUE, RoleGroup.EXPORT, job_options=retry_options(8, 5_000)),
]


def producer_enqueue(producer: QueueProducer) -> Enqueue:
    async def enqueue(project_id: str, queued_job_id: str) -> None:
        await producer.add(PROCESSING_QUEUE, PROCESSING_JOB, {"projectId": project_id}, jobId=queued_job_id)

    return enqueue


async def enqueue_due(metadata: MetadataDB, enqueue: Enqueue, now: datetime) -> int:
    """One processing job per due project; the job id dedupes against jobs already queued."""
    due = await asyncio.to_thread(due_integrations, metadata, now)
    for project_id, cursor in due:
        await enqueue(project_id, job_id(project_id, cursor))
    return len(due)


def export_schedule_cron(metadata: MetadataDB, enqueue: Enqueue, *, interval: timedelta) -> CronSpec:
    """The singleton scheduler: exactly one run per interval across every export worker."""

    async def compute(start: datetime, end: datetime) -> int:
        return await enqueue_due(metadata, enqueue, datetime.now(UTC))

    def apply(session: Session, start: datetime, end: datetime, value: Any) -> None:
        pass  # enqueueing is the effect; the period's commit (cron_runs) is the record

    return CronSpec(
        name=SCHEDULE_CRON,
        queue=SCHEDULE_QUEUE,
        period=interval,
        repeat={"every": int(interval.total_seconds() * 1000)},
        compute=compute,
        apply=apply,
        stale_after=max(timedelta(minutes=2), 4 * interval),
        skip_missed=True,
    )


def export_processor(job_runner: ExportJob) -> Any:
    async def process(job: Any, token: str) -> dict[str, Any]:
        project_id = str(job.data["projectId"])
        return await job_runner.run(project_id, owner=str(job.id))

    return process
