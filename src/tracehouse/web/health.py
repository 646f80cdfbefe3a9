"""Health, readiness and metrics endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from tracehouse import __version__
from tracehouse.api_common import get_services
from tracehouse.runtime import Services

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    """Langfuse's health body."""

    status: str = Field(description='"OK", or "Shutting down" (503)')
    version: str


class ReadyResponse(HealthResponse):
    checks: dict[str, str] = Field(
        default_factory=dict, description='dependency -> "ok" or a one-line reason it is down'
    )


_UNHEALTHY: dict[int | str, dict[str, Any]] = {
    503: {"model": ReadyResponse, "description": "Shutting down, or a dependency is down"}
}


@router.get("/api/public/health", response_model=HealthResponse, responses=_UNHEALTHY)
async def public_health(request: Request) -> HealthResponse | JSONResponse:
    """Langfuse-compatible liveness: the process answers."""
    if request.app.state.shutting_down:
        return JSONResponse({"status": "Shutting down", "version": __version__}, status_code=503)
    return HealthResponse(status="OK", version=__version__)


async def _ready(request: Request, services: Services) -> ReadyResponse | JSONResponse:
    if request.app.state.shutting_down:
        return JSONResponse({"status": "Shutting down", "version": __version__, "checks": {}}, status_code=503)
    checks = await services.check()
    down = sorted(name for name, result in checks.items() if result != "ok")
    if down:
        body = ReadyResponse(status="Unavailable: " + ", ".join(down), version=__version__, checks=checks)
        return JSONResponse(body.model_dump(), status_code=503)
    return ReadyResponse(status="OK", version=__version__, checks=checks)


@router.get("/api/ready", response_model=ReadyResponse, responses=_UNHEALTHY)
async def ready(request: Request, services: Services = Depends(get_services)) -> ReadyResponse | JSONResponse:
    """Readiness: ClickHouse, metadata DB, Redis and the blob store all answer."""
    return await _ready(request, services)


@router.get("/api/public/ready", response_model=ReadyResponse, responses=_UNHEALTHY, include_in_schema=False)
async def public_ready(request: Request, services: Services = Depends(get_services)) -> ReadyResponse | JSONResponse:
    return await _ready(request, services)


@router.get("/metrics", include_in_schema=False)
async def metrics(services: Services = Depends(get_services)) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
