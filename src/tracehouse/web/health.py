"""Health, readiness and metrics endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tracehouse import __version__

router = APIRouter()


@router.get("/api/public/health", tags=["health"])
async def public_health(request: Request) -> JSONResponse:
    """Langfuse-compatible liveness: the process answers."""
    if request.app.state.shutting_down:
        return JSONResponse({"status": "Shutting down", "version": __version__}, status_code=503)
    return JSONResponse({"status": "OK", "version": __version__})


async def _ready(request: Request) -> JSONResponse:
    if request.app.state.shutting_down:
        return JSONResponse({"status": "Shutting down", "version": __version__}, status_code=503)
    checks = await request.app.state.services.check()
    down = sorted(name for name, result in checks.items() if result != "ok")
    if down:
        body = {"status": "Unavailable: " + ", ".join(down), "version": __version__, "checks": checks}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "OK", "version": __version__, "checks": checks})


@router.get("/api/ready", tags=["health"])
async def ready(request: Request) -> JSONResponse:
    """Readiness: ClickHouse, metadata DB, Redis and the blob store all answer."""
    return await _ready(request)


@router.get("/api/public/ready", tags=["health"], include_in_schema=False)
async def public_ready(request: Request) -> JSONResponse:
    return await _ready(request)


@router.get("/metrics", tags=["health"], include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
