"""Langfuse's blob-storage integration management API, plus export progress.

Langfuse requires an organization-scoped key here; tracehouse accepts the project's own key for
its own project, and the admin key (`Authorization: Bearer $ADMIN_API_KEY`) for any project.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from tracehouse.api_common import MAX_JSON_BODY_BYTES, ApiError, BadParameter, NotFound, error_responses, get_services
from tracehouse.auth import Access, require_admin_or_project
from tracehouse.errors import ConfigError
from tracehouse.export.crypto import SecretBox
from tracehouse.export.egress import EgressRule
from tracehouse.export.integrations import (
    DestinationRefused,
    ProjectNotFound,
    check_destination,
    delete_integration,
    list_integrations,
    progress_view,
    response_view,
    status_view,
    upsert_integration,
)
from tracehouse.export.models import (
    ExportProgressList,
    IntegrationDeleted,
    IntegrationRequest,
    IntegrationResponse,
    IntegrationsResponse,
    IntegrationStatus,
)
from tracehouse.metadata import get_project
from tracehouse.runtime import Services

router = APIRouter(tags=["export"])


class SecretsUnavailable(ApiError):
    """ENCRYPTION_KEY is missing, so a secret cannot be stored."""

    status = 422
    error = "ConfigurationError"


_ERRORS = error_responses(400, 401, 403, 404)


@router.get("/api/public/integrations/blob-storage", response_model=IntegrationsResponse, responses=_ERRORS)
async def get_integrations(
    access: Access = Depends(require_admin_or_project), services: Services = Depends(get_services)
) -> IntegrationsResponse:
    rows = await asyncio.to_thread(list_integrations, services.metadata, access.project_id)
    return IntegrationsResponse(data=[response_view(r) for r in rows])


@router.put(
    "/api/public/integrations/blob-storage",
    response_model=IntegrationResponse,
    responses={
        **_ERRORS,
        **error_responses(413),
        422: {"model": dict[str, Any], "description": "ENCRYPTION_KEY is not configured"},
    },
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def put_integration(
    integration: IntegrationRequest,
    access: Access = Depends(require_admin_or_project),
    services: Services = Depends(get_services),
) -> IntegrationResponse | JSONResponse:
    """Create or replace a project's destination. A project key may name public internet endpoints
    only; the admin key also those TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS lists."""
    access.check(integration.project_id)
    settings = services.settings
    missing = f"project {integration.project_id} does not exist"
    if await asyncio.to_thread(get_project, services.metadata, integration.project_id) is None:
        raise NotFound(missing)
    try:
        rule = EgressRule(settings.export_allowed_destinations)
        await check_destination(integration, rule, admin=access.is_admin)
        return await asyncio.to_thread(
            upsert_integration,
            services.metadata,
            SecretBox(settings.encryption_key),
            integration,
            internal_allowed=access.is_admin,
        )
    except DestinationRefused as exc:
        raise BadParameter(exc.parameter, exc.message) from None
    except ProjectNotFound:
        raise NotFound(missing) from None
    except ConfigError as exc:
        return JSONResponse({"error": "ConfigurationError", "message": str(exc)}, status_code=422)


@router.get("/api/public/integrations/blob-storage/status", response_model=ExportProgressList, responses=_ERRORS)
async def export_progress(
    access: Access = Depends(require_admin_or_project), services: Services = Depends(get_services)
) -> ExportProgressList:
    """Export progress per project: watermark, lag, last job, last error, next run."""
    rows = await asyncio.to_thread(list_integrations, services.metadata, access.project_id)
    now = datetime.now(UTC)
    return ExportProgressList(data=[progress_view(r, now) for r in rows])


@router.get(
    "/api/public/integrations/blob-storage/{integration_id}", response_model=IntegrationStatus, responses=_ERRORS
)
async def integration_status(
    integration_id: str, access: Access = Depends(require_admin_or_project), services: Services = Depends(get_services)
) -> IntegrationStatus:
    access.check(integration_id)
    rows = await asyncio.to_thread(list_integrations, services.metadata, integration_id)
    if not rows:
        raise NotFound(f"no integration {integration_id}")
    return status_view(rows[0])


@router.delete(
    "/api/public/integrations/blob-storage/{integration_id}", response_model=IntegrationDeleted, responses=_ERRORS
)
async def remove_integration(
    integration_id: str, access: Access = Depends(require_admin_or_project), services: Services = Depends(get_services)
) -> IntegrationDeleted:
    access.check(integration_id)
    if not await asyncio.to_thread(delete_integration, services.metadata, integration_id):
        raise NotFound(f"no integration {integration_id}")
    return IntegrationDeleted(message="Blob storage integration deleted successfully")
