"""Langfuse's ingestion endpoints: batch ingestion (207) and scores (single object or array)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tracehouse.errors import one_line_reason
from tracehouse.ingestion.models import MAX_BATCH_BYTES, MAX_EVENT_BYTES
from tracehouse.ingestion.otel import OtelRejected, decode_body, spans_to_events
from tracehouse.ingestion.service import BatchResult, accept_batch
from tracehouse.logging import get_logger
from tracehouse.web.auth import ProjectAuth, require_project

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


def _invalid(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"message": "Invalid request data", "error": message}, status_code=status)


async def _read_json(request: Request) -> Any:
    """The parsed body, or the error response (413 too large, 400 not JSON) to send instead."""
    body = await request.body()
    if len(body) > MAX_BATCH_BYTES:
        return _invalid(
            f"request body is {len(body)} bytes; the limit is {MAX_BATCH_BYTES} (4.5 MB). Send smaller batches.", 413
        )
    try:
        return orjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _invalid(f"body is not valid JSON: {exc}")


def _oversized(events: list[Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    kept, errors = [], []
    for event in events:
        size = len(orjson.dumps(event))
        if size > MAX_EVENT_BYTES:
            event_id = event.get("id") if isinstance(event, dict) else None
            errors.append(
                {
                    "id": event_id if isinstance(event_id, str) else "unknown",
                    "status": 413,
                    "message": "Event too large",
                    "error": f"event is {size} bytes; the limit is {MAX_EVENT_BYTES}",
                }
            )
        else:
            kept.append(event)
    return kept, errors


async def _accept(request: Request, auth: ProjectAuth, events: list[Any]) -> BatchResult | JSONResponse:
    # No event can be larger than the whole request: measure events only when that is possible.
    if len(await request.body()) > MAX_EVENT_BYTES:
        kept, too_large = _oversized(events)
    else:
        kept, too_large = events, []
    services = request.app.state.services
    try:
        result = await accept_batch(
            kept,
            project_id=auth.project_id,
            blobs=services.blobs,
            producer=request.app.state.producer,
            ingestion=_ingestion_meta(request, auth),
            metrics=services.metrics,
        )
    except Exception as exc:  # noqa: BLE001 - storage or queue down: nothing was accepted, say so
        get_logger("tracehouse.ingestion").error(
            "ingestion_accept_failed", project_id=auth.project_id, error=one_line_reason(exc)
        )
        return JSONResponse(
            {
                "message": "Ingestion is unavailable; nothing in this request was stored. Retry.",
                "error": one_line_reason(exc),
            },
            status_code=503,
        )
    result.errors.extend(too_large)
    return result


@router.post("/api/public/ingestion", status_code=207)
async def ingestion(request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    """Batch ingestion: each event succeeds or fails on its own (HTTP 207)."""
    payload = await _read_json(request)
    if isinstance(payload, JSONResponse):
        return payload
    if not isinstance(payload, dict) or not isinstance(payload.get("batch"), list):
        return JSONResponse(
            {"message": "Invalid request data", "errors": ["batch: expected an array of events"]}, status_code=400
        )
    result = await _accept(request, auth, payload["batch"])
    if isinstance(result, JSONResponse):
        return result
    return JSONResponse({"successes": result.successes, "errors": result.errors}, status_code=207)


@router.post("/api/public/otel/v1/traces")
async def otel_traces(request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    """OTLP/HTTP traces (protobuf or JSON, gzip accepted), mapped onto Langfuse traces and observations."""
    content_type = request.headers.get("content-type", "")
    version = _header(request, "x-langfuse-ingestion-version")
    if version is not None and (not version.isdigit() or int(version) > 4):
        return JSONResponse({"error": f"unsupported x-langfuse-ingestion-version {version!r}"}, status_code=400)
    try:
        decoded = decode_body(await request.body(), content_type, request.headers.get("content-encoding"))
        events = spans_to_events(decoded, from_protobuf="protobuf" in content_type)
    except OtelRejected as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    if not events:
        return JSONResponse({}, status_code=200)
    result = await _accept(request, auth, events)
    if isinstance(result, JSONResponse):
        return result
    if result.errors:
        # A span whose mapped event is invalid (e.g. bad level) is reported, the rest are stored.
        return JSONResponse(
            {
                "partialSuccess": {
                    "rejectedSpans": len(result.errors),
                    "errorMessage": "; ".join(e["error"] for e in result.errors[:5]),
                }
            },
            status_code=200,
        )
    return JSONResponse({}, status_code=200)


def _score_event(body: Any) -> Any:
    if not isinstance(body, dict):
        return body  # rejected by validation with a clear message
    body = dict(body)
    body["id"] = body.get("id") or str(uuid.uuid4())
    return {"id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat(), "type": "score-create", "body": body}


@router.post("/api/public/scores")
async def create_scores(request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    """One score object (answers `{id}`) or a JSON array of them (202, or 207 when some are rejected)."""
    payload = await _read_json(request)
    if isinstance(payload, JSONResponse):
        return payload
    single = not isinstance(payload, list)
    events = [_score_event(item) for item in ([payload] if single else payload)]
    result = await _accept(request, auth, events)
    if isinstance(result, JSONResponse):
        return result
    if single:
        if result.errors:
            error = result.errors[0]
            return JSONResponse({"message": error["message"], "error": error["error"]}, status_code=error["status"])
        return JSONResponse({"id": events[0]["body"]["id"]}, status_code=200)
    if not result.errors:
        return JSONResponse({"message": "Accepted"}, status_code=202)
    by_event = {e["id"]: e["body"].get("id") if isinstance(e, dict) else None for e in events if isinstance(e, dict)}
    accepted = [by_event.get(s["id"]) for s in result.successes]
    rejected = [
        {"id": by_event.get(e["id"]), "status": e["status"], "message": e["message"], "error": e["error"]}
        for e in result.errors
    ]
    return JSONResponse({"accepted": accepted, "rejected": len(rejected), "errors": rejected}, status_code=207)
