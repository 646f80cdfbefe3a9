"""GET /api/public/usage: a project's hourly usage."""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request

from tracehouse.usage.service import usage_for_project
from tracehouse.web.auth import ProjectAuth, require_project

router = APIRouter(tags=["usage"])


@router.get("/api/public/usage")
async def get_usage(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
    from_: datetime | None = Query(None, alias="from", description="Start hour (inclusive), ISO 8601"),
    to: datetime | None = Query(None, description="End hour (exclusive), ISO 8601"),
) -> dict:
    rows = await asyncio.to_thread(usage_for_project, request.app.state.services.metadata, auth.project_id, from_, to)
    data = [
        {
            "hour": r.hour.isoformat().replace("+00:00", "Z"),
            "traces": r.traces,
            "observations": r.observations,
            "scores": r.scores,
        }
        for r in rows
    ]
    totals = {
        "traces": sum(r.traces for r in rows),
        "observations": sum(r.observations for r in rows),
        "scores": sum(r.scores for r in rows),
    }
    return {"data": data, "meta": {"projectId": auth.project_id, "hours": len(data), "totals": totals}}
