"""Langfuse's ingestion endpoints: batch ingestion (207), OpenTelemetry traces and scores."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tracehouse.api_common import BadParameter, BadRequest, Unavailable, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.errors import one_line_reason
from tracehouse.ingestion.models import (
    IngestionRequest,
    IngestionResponse,
    OtelExportResponse,
    OtelPartialSuccess,
    ScoreBatchAccepted,
    ScoreBatchError,
    ScoreBatchResults,
    ScoreCreated,
)
from tracehouse.ingestion.otel import OtelRejected, map_request
from tracehouse.ingestion.service import BatchResult, accept_batch
from tracehouse.logging import get_logger
from tracehouse.request_body import read_body
from tracehouse.runtime import Services
from tracehouse.settings import Settings

router = APIRouter(tags=["ingestion"])


def _header(request: Request, name: str) -> str | None:
    # SDK generations send both spellings (x-langfuse-sdk-name and x_langfuse_sdk_name).
    return request.headers.get(name) or request.headers.get(name.replace("-", "_"))


def _ingestion_meta(request: Request, auth: ProjectAuth) -> dict[str, str]:
    return {
        "publicKey": auth.public_key,
        "sdkName": _header(request, "x-langfuse-sdk-name") or "unknown",
        "sdkVersion": _header(request, "x-langfuse-sdk-version") or "unknown",
    }


async def _read_json(request: Request, settings: Settings) -> Any:
    """The parsed body; 413 when too large (before reading it when Content-Length says so), 408 when
    it does not arrive in time, 400 when not JSON."""
    body = await read_body(request, limit=settings.ingestion_max_body_bytes, timeout_s=settings.http_body_timeout_s)
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


async def _accept(request: Request, auth: ProjectAuth, services: Services, events: list[Any]) -> BatchResult:
    try:
        return await accept_batch(
            events,
            project_id=auth.project_id,
            blobs=services.blobs,
            producer=services.producer,
            ingestion=_ingestion_meta(request, auth),
            metrics=services.metrics,
            max_events_per_job=services.settings.ingestion_max_events_per_job,
        )
    except Exception as exc:  # noqa: BLE001 - storage or queue down: nothing was accepted, say so
        reason = one_line_reason(exc)
        get_logger("tracehouse.ingestion").error("ingestion_accept_failed", project_id=auth.project_id, error=reason)
        raise Unavailable("Ingestion is unavailable; nothing in this request was stored. Retry.", reason) from None


@router.post(
    "/api/public/ingestion",
    status_code=207,
    response_model=IngestionResponse,
    responses=error_responses(400, 401, 408, 413, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": IngestionRequest.model_json_schema()}},
        }
    },
)
async def ingestion(
    request: Request, auth: ProjectAuth = Depends(require_project), services: Services = Depends(get_services)
) -> JSONResponse:
    """Batch ingestion: each event succeeds or fails on its own (HTTP 207)."""
    try:
        payload = IngestionRequest.model_validate(await _read_json(request, services.settings))
    except ValidationError:
        raise BadParameter("batch", "expected an array of events") from None
    result = await _accept(request, auth, services, payload.batch)
    body = IngestionResponse.model_validate({"successes": result.successes, "errors": result.errors})
    return JSONResponse(body.model_dump(), status_code=207)


@router.post(
    "/api/public/otel/v1/traces",
    response_model=OtelExportResponse,
    response_model_exclude_none=True,
    response_model_by_alias=True,
    responses=error_responses(400, 401, 408, 413, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "OTLP ExportTraceServiceRequest, protobuf or JSON, optionally gzipped",
            "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
)
async def otel_traces(
    request: Request, auth: ProjectAuth = Depends(require_project), services: Services = Depends(get_services)
) -> OtelExportResponse:
    """OTLP/HTTP traces (protobuf or JSON, gzip accepted), mapped onto Langfuse traces and observations."""
    content_type = request.headers.get("content-type", "")
    version = _header(request, "x-langfuse-ingestion-version")
    if version is not None and (not version.isdigit() or int(version) > 4):
        raise BadParameter("x-langfuse-ingestion-version", f"unsupported version {version!r}")
    try:
        # Protobuf parsing and span mapping are CPU work (5 s for 30,000 spans): off the event loop.
        body = await read_body(
            request,
            limit=services.settings.otel_max_body_bytes,
            timeout_s=services.settings.http_body_timeout_s,
            decompress_limit=services.settings.max_decompressed_bytes,
            detect_gzip=True,
        )
        mapped = await asyncio.to_thread(map_request, body, content_type)  # read_body inflated it
    except OtelRejected as exc:
        raise BadRequest(str(exc)) from None
    if mapped.spans and len(mapped.rejected) == mapped.spans:
        raise BadRequest("no span could be read: " + "; ".join(sorted(set(mapped.rejected))[:5]))
    result = await _accept(request, auth, services, mapped.events) if mapped.events else None
    # A span that cannot be mapped, or whose mapped event is invalid, is reported; the rest are stored.
    reasons = mapped.rejected + [str(e["error"]) for e in (result.errors if result else [])]
    if not reasons:
        return OtelExportResponse()
    partial = OtelPartialSuccess(rejected_spans=len(reasons), error_message="; ".join(sorted(set(reasons))[:5]))
    return OtelExportResponse(partial_success=partial)


def _score_event(body: Any) -> Any:
    if not isinstance(body, dict):
        return body  # rejected by validation with a clear message
    body = dict(body)
    body["id"] = body.get("id") or str(uuid.uuid4())
    return {"id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "type": "score-create", "body": body}


@router.post(
    "/api/public/scores",
    response_model=ScoreCreated | ScoreBatchAccepted | ScoreBatchResults,
    responses={
        202: {"model": ScoreBatchAccepted, "description": "Every score of the array was accepted"},
        207: {"model": ScoreBatchResults, "description": "Some scores of the array were rejected"},
        **error_responses(400, 401, 408, 413, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "One score object, or an array of them",
            "content": {"application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}}},
        }
    },
)
async def create_scores(
    request: Request, auth: ProjectAuth = Depends(require_project), services: Services = Depends(get_services)
) -> JSONResponse:
    """One score object (answers `{id}`) or a JSON array of them (202, or 207 when some are rejected)."""
    payload = await _read_json(request, services.settings)
    single = not isinstance(payload, list)
    events = [_score_event(item) for item in ([payload] if single else payload)]
    result = await _accept(request, auth, services, events)
    if single:
        if result.errors:
            error = result.errors[0]
            return JSONResponse({"message": error["message"], "error": error["error"]}, status_code=error["status"])
        return JSONResponse(ScoreCreated(id=events[0]["body"]["id"]).model_dump(), status_code=200)
    if not result.errors:
        return JSONResponse(ScoreBatchAccepted().model_dump(), status_code=202)
    score_of = {e["id"]: e["body"].get("id") for e in events if isinstance(e, dict)}
    errors = [
        ScoreBatchError(id=score_of.get(e["id"]), status=e["status"], message=e["message"], error=e["error"])
        for e in result.errors
    ]
    results = ScoreBatchResults(accepted=len(result.successes), rejected=len(errors), errors=errors)
    return JSONResponse(results.model_dump(), status_code=207)
