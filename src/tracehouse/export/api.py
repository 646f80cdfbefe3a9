"""Langfuse's blob-storage integration management API.

Langfuse requires an organization-scoped key here; tracehouse accepts the project's own key for
its own project, and the admin key (`Authorization: Bearer $ADMIN_API_KEY`) for any project.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tracehouse.errors import ConfigError
from tracehouse.export.crypto import SecretBox
from tracehouse.export.integrations import (
    IntegrationRequest,
    delete_integration,
    list_integrations,
    progress_view,
    response_view,
    status_view,
    upsert_integration,
)
from tracehouse.web.auth import require_project

router = APIRouter(tags=["export"])


async def _scope(request: Request) -> str | None:
    """None = admin (every project); otherwise the one project the key may touch."""
    admin_key = request.app.state.services.settings.admin_api_key
    if admin_key and request.headers.get("authorization", "") == f"Bearer {admin_key}":
        return None
    return (await require_project(request)).project_id


def _forbidden(project_id: str) -> JSONResponse:
    return JSONResponse(
        {"error": "ForbiddenError", "message": f"this key cannot manage project {project_id}"}, status_code=403
    )


@router.get("/api/public/integrations/blob-storage")
async def get_integrations(request: Request) -> JSONResponse:
    scope = await _scope(request)
    rows = await asyncio.to_thread(list_integrations, request.app.state.services.metadata, scope)
    return JSONResponse({"data": [response_view(r) for r in rows]})


@router.put("/api/public/integrations/blob-storage")
async def put_integration(request: Request) -> JSONResponse:
    scope = await _scope(request)
    try:
        body: Any = await request.json()
        integration = IntegrationRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return JSONResponse({"message": "Invalid request data", "error": f"{where}: {message}"}, status_code=400)
    except ValueError:
        return JSONResponse({"message": "Invalid request data", "error": "body is not valid JSON"}, status_code=400)
    if scope is not None and integration.project_id != scope:
        return _forbidden(integration.project_id)
    services = request.app.state.services
    try:
        view = await asyncio.to_thread(
            upsert_integration, services.metadata, SecretBox(services.settings.encryption_key), integration
        )
    except ConfigError as exc:
        return JSONResponse({"error": "ConfigurationError", "message": str(exc)}, status_code=422)
    return JSONResponse(view)


@router.get("/api/public/integrations/blob-storage/status")
async def export_progress(request: Request) -> JSONResponse:
    """Export progress per project: watermark, lag, last job, last error, next run."""
    scope = await _scope(request)
    rows = await asyncio.to_thread(list_integrations, request.app.state.services.metadata, scope)
    now = datetime.now(UTC)
    return JSONResponse({"data": [progress_view(r, now) for r in rows]})


@router.get("/api/public/integrations/blob-storage/{integration_id}")
async def integration_status(integration_id: str, request: Request) -> JSONResponse:
    scope = await _scope(request)
    if scope is not None and integration_id != scope:
        return _forbidden(integration_id)
    rows = await asyncio.to_thread(list_integrations, request.app.state.services.metadata, integration_id)
    if not rows:
        return JSONResponse({"error": "NotFound", "message": f"no integration {integration_id}"}, status_code=404)
    return JSONResponse(status_view(rows[0]))


@router.delete("/api/public/integrations/blob-storage/{integration_id}")
async def remove_integration(integration_id: str, request: Request) -> JSONResponse:
    scope = await _scope(request)
    if scope is not None and integration_id != scope:
        return _forbidden(integration_id)
    if not await asyncio.to_thread(delete_integration, request.app.state.services.metadata, integration_id):
        return JSONResponse({"error": "NotFound", "message": f"no integration {integration_id}"}, status_code=404)
    return JSONResponse({"message": "Blob storage integration deleted successfully"})
