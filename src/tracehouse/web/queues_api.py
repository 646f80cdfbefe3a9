"""Queue health and job status over HTTP.

`GET /api/health/queue` is Langfuse-style queue health for the web process (503 when a queue is
stuck or Redis is gone). Job status needs either the admin key (`Authorization: Bearer
$ADMIN_API_KEY`) or the key of the project the job belongs to.
"""

from __future__ import annotations

from typing import Any

from bullmq import Job, Queue
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tracehouse.queues import QUEUES, redis_client
from tracehouse.queues.health import check_queues
from tracehouse.web.auth import AuthError, require_project


def app_redis(app: Any) -> Any:
    """The app's plain Redis client, created when first needed."""
    if app.state.redis is None:
        app.state.redis = redis_client(app.state.services.redis_url)
    return app.state.redis


router = APIRouter(tags=["queues"])


@router.get("/api/health/queue")
async def queue_health(request: Request) -> JSONResponse:
    services = request.app.state.services
    health = await check_queues(
        app_redis(request.app),
        services.settings.redis_key_prefix,
        queues=list(QUEUES),
        expected=request.app.state.expected_queues,
        stuck_after_s=services.settings.queue_stuck_threshold_minutes * 60,
        metrics=services.metrics,
    )
    return JSONResponse(health.body, status_code=200 if health.healthy else 503)


def job_view(job: Job, state: str) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue.name if hasattr(job.queue, "name") else None,
        "state": state,
        "progress": job.progress,
        "attemptsMade": job.attemptsMade,
        "failedReason": job.failedReason,
        "data": job.data,
        "returnValue": job.returnvalue,
        "timestamp": job.timestamp,
        "processedOn": job.processedOn,
        "finishedOn": job.finishedOn,
    }


async def _authorize(request: Request, job: Job | None) -> None:
    admin_key = request.app.state.services.settings.admin_api_key
    header = request.headers.get("authorization", "")
    if admin_key and header == f"Bearer {admin_key}":
        return
    auth = await require_project(request)
    if job is not None and (job.data or {}).get("projectId") != auth.project_id:
        raise AuthError("This job does not belong to your project")


@router.get("/api/admin/queues/{queue}/jobs/{job_id}")
async def job_status(queue: str, job_id: str, request: Request) -> JSONResponse:
    if queue not in QUEUES:
        return JSONResponse({"error": "NotFound", "message": f"unknown queue {queue!r}"}, status_code=404)
    services = request.app.state.services
    handle = Queue(queue, {"connection": services.redis_connection, "prefix": services.settings.redis_key_prefix})
    try:
        job = await handle.getJob(job_id)
        await _authorize(request, job)
        if job is None:
            return JSONResponse({"error": "NotFound", "message": f"no job {job_id!r} in {queue}"}, status_code=404)
        state = await handle.getJobState(job_id)
        return JSONResponse(job_view(job, state))
    finally:
        await handle.close()
