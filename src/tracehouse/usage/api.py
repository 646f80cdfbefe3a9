"""GET /api/public/usage: a project's hourly usage."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Depends, Query

from tracehouse.api_common import error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.runtime import Services
from tracehouse.usage.models import UsageHour, UsageMeta, UsageResponse, UsageTotals
from tracehouse.usage.service import usage_for_project

router = APIRouter(tags=["usage"])


@router.get("/api/public/usage", response_model=UsageResponse, responses=error_responses(400, 401))
async def get_usage(
    auth: ProjectAuth = Depends(require_project),
    services: Services = Depends(get_services),
    from_: datetime | None = Query(None, alias="from", description="Start hour (inclusive), ISO 8601"),
    to: datetime | None = Query(None, description="End hour (exclusive), ISO 8601"),
) -> UsageResponse:
    rows = await asyncio.to_thread(usage_for_project, services.metadata, auth.project_id, from_, to)
    data = [
        UsageHour(
            hour=r.hour.isoformat().replace("+00:00", "Z"),
            traces=r.traces,
            observations=r.observations,
            scores=r.scores,
        )
        for r in rows
    ]
    totals = UsageTotals(
        traces=sum(r.traces for r in rows),
        observations=sum(r.observations for r in rows),
        scores=sum(r.scores for r in rows),
    )
    return UsageResponse(data=data, meta=UsageMeta(project_id=auth.project_id, hours=len(data), totals=totals))
