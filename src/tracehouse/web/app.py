"""The FastAPI application: routes from each capability, auth, errors and request metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response

from tracehouse import __version__
from tracehouse.auth import KeyVerifier
from tracehouse.batch_export import api as batch_export_api
from tracehouse.export import api as export_api
from tracehouse.ingestion import api as ingestion_api
from tracehouse.media import api as media_api
from tracehouse.pricing import api as pricing_api
from tracehouse.queries import api as queries_api
from tracehouse.runtime import Services
from tracehouse.usage import api as usage_api
from tracehouse.web import errors, health, queues_api

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    services: Services, *, background: Lifespan | None = None, expected_queues: list[str] | None = None
) -> FastAPI:
    """Build the web app over already-opened services (the caller closes them).

    `background` runs inside the app's lifespan: `serve` passes the queue workers here so the
    whole system starts and stops with the web server.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if background is None:
                yield
            else:
                async with background(app):
                    yield
        finally:
            app.state.shutting_down = True

    app = FastAPI(
        title="tracehouse",
        version=__version__,
        openapi_url="/api/public/openapi.json",
        docs_url="/api/public/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.shutting_down = False
    app.state.key_verifier = KeyVerifier(
        services.metadata, salt=services.settings.salt, max_bytes=services.settings.auth_cache_max_bytes
    )
    # Queues that some worker should be consuming (stuck detection only applies to these).
    app.state.expected_queues = expected_queues if expected_queues is not None else []

    _install_request_metrics(app, services)
    errors.install(app)
    for module in (
        health,
        queues_api,
        usage_api,
        ingestion_api,
        queries_api,
        export_api,
        batch_export_api,
        media_api,
        pricing_api,
    ):
        app.include_router(module.router)
    return app


def _install_request_metrics(app: FastAPI, services: Services) -> None:
    metrics = services.metrics

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.http_latency.labels(request.method, path).observe(time.perf_counter() - started)
        metrics.http_requests.labels(request.method, path, str(response.status_code)).inc()
        return response
