"""The FastAPI application: routes from each capability, auth, errors and request metrics."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tracehouse import __version__
from tracehouse.export import api as export_api
from tracehouse.ingestion import api as ingestion_api
from tracehouse.queries import api as queries_api
from tracehouse.queues import QUEUES, QueueProducer
from tracehouse.runtime import Services
from tracehouse.usage import api as usage_api
from tracehouse.web import health, queues_api
from tracehouse.web.auth import AuthError, KeyVerifier

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    services: Services, *, background: Lifespan | None = None, expected_queues: list[str] | None = None
) -> FastAPI:
    """Build the web app over already-opened services.

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
            await app.state.producer.close()
            if app.state.redis is not None:
                await app.state.redis.aclose()

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
    app.state.key_verifier = KeyVerifier(services.metadata, salt=services.settings.salt)
    # The plain Redis client is made on first use (queues_api.app_redis) and closed with the app.
    app.state.redis = None
    app.state.producer = QueueProducer(services.redis_connection, QUEUES, prefix=services.settings.redis_key_prefix)
    # Queues that some worker should be consuming (stuck detection only applies to these).
    app.state.expected_queues = expected_queues if expected_queues is not None else []

    @app.exception_handler(AuthError)
    async def _auth_error(_request: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse({"error": "UnauthorizedError", "message": exc.message}, status_code=401)

    _install_request_metrics(app, services)
    app.include_router(health.router)
    app.include_router(queues_api.router)
    app.include_router(usage_api.router)
    app.include_router(ingestion_api.router)
    app.include_router(queries_api.router)
    queries_api.install_error_handlers(app)
    app.include_router(export_api.router)
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
