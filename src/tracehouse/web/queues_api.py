"""Queue health and job status over HTTP.

`GET /api/health/queue` is Langfuse-style queue health for the web process (503 when a queue is
stuck or Redis is gone). Job status needs either the admin key (`Authorization: Bearer
$ADMIN_API_KEY`) or the key of the project the job belongs to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tracehouse.api_common import NotFound, error_responses, get_services
from tracehouse.auth import Access, require_admin_or_project
from tracehouse.capabilities import QUEUES
from tracehouse.queues.health import check_queues
from tracehouse.runtime import Services

router = APIRouter(tags=["queues"])


class QueueHealthResponse(BaseModel):
    healthy: bool
    redis: bool
    queue: bool = Field(description="no queue is stuck")
    worker: bool
    details: dict[str, Any] = Field(description="redis_status, queue_counts, stuck_queues, stuck_threshold_seconds")


class JobStatus(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str | None
    name: str | None
    queue: str
    state: str = Field(description="waiting, delayed, active, completed, failed or unknown")
    progress: Any
    attempts_made: int = Field(alias="attemptsMade")
    failed_reason: str | None = Field(alias="failedReason")
    data: dict[str, Any]
    return_value: Any = Field(alias="returnValue")
    timestamp: int | None
    processed_on: int | None = Field(alias="processedOn")
    finished_on: int | None = Field(alias="finishedOn")


@router.get(
    "/api/health/queue",
    response_model=QueueHealthResponse,
    responses={503: {"model": QueueHealthResponse, "description": "Redis unreachable or a queue is stuck"}},
)
async def queue_health(request: Request, services: Services = Depends(get_services)) -> JSONResponse:
    health = await check_queues(
        services.redis,
        services.settings.redis_key_prefix,
        queues=list(QUEUES),
        expected=request.app.state.expected_queues,
        stuck_after_s=services.settings.queue_stuck_threshold_minutes * 60,
        metrics=services.metrics,
    )
    return JSONResponse(health.body, status_code=200 if health.healthy else 503)


@router.get(
    "/api/admin/queues/{queue}/jobs/{job_id}",
    response_model=JobStatus,
    response_model_by_alias=True,
    responses=error_responses(400, 401, 404),
)
async def job_status(
    queue: str,
    job_id: str,
    access: Access = Depends(require_admin_or_project),
    services: Services = Depends(get_services),
) -> JobStatus:
    if queue not in QUEUES:
        raise NotFound(f"unknown queue {queue!r}")
    handle = services.producer.queue(queue)
    job = await handle.getJob(job_id)
    # A job of another project is answered exactly like a missing one: ids must not be probeable.
    if job is None or (not access.is_admin and (job.data or {}).get("projectId") != access.project_id):
        raise NotFound(f"no job {job_id!r} in {queue}")
    return JobStatus(
        id=job.id,
        name=job.name,
        queue=queue,
        state=await handle.getJobState(job_id),
        progress=job.progress,
        attempts_made=job.attemptsMade,
        failed_reason=job.failedReason,
        data=job.data or {},
        return_value=job.returnvalue,
        timestamp=job.timestamp,
        processed_on=job.processedOn,
        finished_on=job.finishedOn,
    )
