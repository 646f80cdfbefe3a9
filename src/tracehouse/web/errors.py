"""Errors as JSON bodies of one shape, and an OpenAPI document that says so.

FastAPI answers a parameter it cannot parse with 422 and its own body; Langfuse answers 400. The
handlers here turn every validation failure into a 400 `ErrorBody` naming the parameter, and the
OpenAPI document lists that 400 instead of FastAPI's 422.

A client that disconnects before its request body is complete is not an error of ours: it is
logged at info (`client_disconnected`) and answered with nothing (uvicorn drops the answer).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from tracehouse.api_common import ApiError, ErrorBody
from tracehouse.clickhouse import ClickHouseError, ClickHouseErrorKind
from tracehouse.logging import get_logger


def clickhouse_error_body(exc: ClickHouseError) -> tuple[int, dict[str, str]]:
    """The interactive class's limits answer as clear JSON errors, never a 500 traceback."""
    if exc.kind is ClickHouseErrorKind.TIMEOUT:
        return 504, {
            "error": "QueryTimeout",
            "message": "The query took longer than the interactive timeout; narrow the time range or filters.",
        }
    if exc.kind in (ClickHouseErrorKind.MEMORY_LIMIT, ClickHouseErrorKind.OVERCOMMIT):
        return 503, {
            "error": "QueryTooLarge",
            "message": "The query needed more memory than the interactive limit allows; "
            "narrow the time range or filters.",
        }
    return 500, {"error": "QueryFailed", "message": "The query failed inside ClickHouse."}


def _validation_body(exc: RequestValidationError) -> dict[str, Any]:
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(p) for p in first.get("loc", ())]
    # ("query", "limit") -> "limit"; ("body", "batch", 3) -> "batch.3"
    parameter = ".".join(location[1:]) if len(location) > 1 else (location[0] if location else "request")
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return {"message": "Invalid request data", "error": f"{parameter}: {message}", "parameter": parameter}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_body(exc), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own answers (no such route, method not allowed, body over a route's limit) in
        # the same body shape as every other error.
        if exc.status_code in (400, 413):  # Langfuse's "Invalid request data" convention for client data
            body = {"message": "Invalid request data", "error": str(exc.detail)}
        else:
            names = {404: "LangfuseNotFoundError", 405: "MethodNotAllowed"}
            body = {"error": names.get(exc.status_code, "HTTPError"), "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RecursionError)
    async def _too_deep(_request: Request, _exc: RecursionError) -> JSONResponse:
        # A JSON body nested thousands of levels deep exhausts the parser's recursion: the client's doing.
        body = {"message": "Invalid request data", "error": "the request body is nested too deeply"}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _exc: ClientDisconnect) -> Response:
        # Covers tracehouse.request_body.ClientDisconnected (a subclass) and starlette's own.
        get_logger("tracehouse.http").info("client_disconnected", method=request.method, path=request.url.path)
        return Response(status_code=400)

    @app.exception_handler(ClickHouseError)
    async def _engine(_request: Request, exc: ClickHouseError) -> JSONResponse:
        status, body = clickhouse_error_body(exc)
        return JSONResponse(body, status_code=status)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:
                responses.setdefault(
                    "400",
                    {"description": "Invalid request", "content": {"application/json": {"schema": error_ref}}},
                )
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
