"""Fold an entity's events into its final row, with Langfuse's merge semantics.

Events are applied in envelope-timestamp order (creates before updates on ties). Per field, a
later value wins unless the field is absent or an empty object/list; an explicit null does win.
Immutable fields keep their first value; metadata is merged key by key; tags are a sorted union;
input and output keep the last non-empty value. Deliberate differences from Langfuse: an event
without `public` leaves the previous value instead of resetting it to false, and an observation
without a trace id gets a deterministic one (so a replay rebuilds the same rows) plus a trace.
Costs follow Langfuse's ingestion (`tracehouse.pricing.matching`): sent costs are kept and get their
`total`; without any, the matched model's prices times the usage.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from tracehouse.pricing.matching import ProjectModels, price_usage

UNSET = object()


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _event_order(event: dict[str, Any]) -> tuple[datetime, int]:
    is_update = event["type"].endswith("-update")
    return _parse_time(event["timestamp"]) or datetime.min.replace(tzinfo=UTC), 1 if is_update else 0


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # e.g. integers beyond 64 bits
        return json.dumps(value, separators=(",", ":"), default=str)


def metadata_map(value: Any) -> dict[str, str]:
    """Langfuse stores metadata as Map(String, String): objects as is, anything else under `metadata`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): _stringify(v) for k, v in value.items()}
    return {"metadata": _stringify(value)}


def _empty(value: Any) -> bool:
    return isinstance(value, dict | list) and not value


def _fold(events: list[dict[str, Any]], immutable: set[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    tags: set[str] = set()
    for event in sorted(events, key=_event_order):
        for key, value in event["body"].items():
            if key == "metadata":
                metadata.update(metadata_map(value))
            elif key == "tags":
                tags.update(value or [])
            elif key in ("input", "output"):
                if value not in (None, "", [], {}):
                    merged[key] = value
            elif key in immutable and merged.get(key) is not None or _empty(value):
                continue
            elif key in ("usageDetails", "costDetails") and isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
        merged.setdefault("_first_ts", event["timestamp"])
        merged["_last_type"] = event["body"].get("type", merged.get("_last_type"))
    merged["metadata"] = metadata
    merged["tags"] = sorted(tags)
    return merged


def _io(value: Any) -> str | None:
    return None if value is None else _stringify(value)


def trace_row(project_id: str, entity_id: str, events: list[dict[str, Any]], created_at: datetime) -> dict[str, Any]:
    m = _fold(events, {"id", "timestamp", "environment"})
    return {
        "id": entity_id,
        "project_id": project_id,
        "timestamp": _parse_time(m.get("timestamp")) or _parse_time(m["_first_ts"]),
        "name": m.get("name") or "",
        "user_id": m.get("userId"),
        "session_id": m.get("sessionId"),
        "release": m.get("release"),
        "version": m.get("version"),
        "environment": m.get("environment") or "default",
        "metadata": m["metadata"],
        "tags": m["tags"],
        "public": bool(m.get("public") or False),
        "bookmarked": False,
        "input": _io(m.get("input")),
        "output": _io(m.get("output")),
        "created_at": created_at,
        "is_deleted": 0,
    }


def implicit_trace_id(project_id: str, observation_id: str) -> str:
    """The trace an observation without `traceId` is filed under: stable across replays."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tracehouse:{project_id}:orphan:{observation_id}"))


def _decimal(value: float) -> Decimal:
    # Decimal64(12) holds about +-9.2e6; clamp like Langfuse so one absurd cost cannot fail a batch.
    return Decimal(str(max(-999_999.0, min(999_999.0, float(value))))).quantize(Decimal("0.000000000001"))


def observation_row(
    project_id: str,
    entity_id: str,
    events: list[dict[str, Any]],
    created_at: datetime,
    models: ProjectModels | None = None,
) -> dict[str, Any]:
    """The final row; with `models`, the model that prices it and the costs Langfuse would compute."""
    m = _fold(events, {"id", "traceId", "startTime", "environment"})
    start = _parse_time(m.get("startTime")) or _parse_time(m["_first_ts"])
    end = _parse_time(m.get("endTime"))
    if end is not None and start is not None and end < start:
        end = start
    usage = {k: int(v) for k, v in (m.get("usageDetails") or {}).items()}
    provided_usage = dict(usage)
    if usage and "total" not in usage:
        usage["total"] = sum(usage.values())
    costs = {k: float(v) for k, v in (m.get("costDetails") or {}).items()}
    params = m.get("modelParameters")
    model = models.find(m.get("model")) if models is not None else None
    # Top-level parameters as strings, only for a model whose tiers compare them.
    attributes = (
        metadata_map(params) if model is not None and model.uses_attributes and isinstance(params, dict) else None
    )
    priced = price_usage(model, usage, costs, model_parameters=attributes, metadata=m["metadata"])
    return {
        "id": entity_id,
        "trace_id": m.get("traceId") or implicit_trace_id(project_id, entity_id),
        "project_id": project_id,
        "type": m.get("_last_type") or "SPAN",
        "parent_observation_id": m.get("parentObservationId"),
        "start_time": start,
        "end_time": end,
        "name": m.get("name") or "",
        "metadata": m["metadata"],
        "level": m.get("level") or "DEFAULT",
        "status_message": m.get("statusMessage"),
        "version": m.get("version"),
        "environment": m.get("environment") or "default",
        "input": _io(m.get("input")),
        "output": _io(m.get("output")),
        "provided_model_name": m.get("model"),
        "internal_model_id": priced.internal_model_id,
        "model_parameters": None if params is None else _stringify(params),
        "provided_usage_details": provided_usage,
        "usage_details": usage,
        "provided_cost_details": {k: _decimal(v) for k, v in costs.items()},
        "cost_details": {k: _decimal(v) for k, v in priced.cost_details.items()},
        "total_cost": None if priced.total_cost is None else _decimal(priced.total_cost),
        "usage_pricing_tier_id": priced.usage_pricing_tier_id,
        "usage_pricing_tier_name": priced.usage_pricing_tier_name,
        "completion_start_time": _parse_time(m.get("completionStartTime")),
        "prompt_name": m.get("promptName"),
        "prompt_version": m.get("promptVersion"),
        "created_at": created_at,
        "is_deleted": 0,
    }


def score_row(
    project_id: str, entity_id: str, events: list[dict[str, Any]], created_at: datetime, ingestion: dict[str, str]
) -> dict[str, Any]:
    m = _fold(events, {"id", "traceId", "environment"})
    kind = m.get("dataType") or "NUMERIC"
    value, string_value, long_text, name = m.get("value"), None, "", m.get("name") or ""
    if kind == "BOOLEAN":
        string_value = "True" if value in (1, 1.0, "1") else "False"
    elif kind in ("CATEGORICAL", "TEXT"):
        string_value, value = str(value), 0.0
    elif kind == "CORRECTION":
        long_text, value, name = str(value), 0.0, "output"
    return {
        "id": entity_id,
        "project_id": project_id,
        "timestamp": _parse_time(m["_first_ts"]),
        "environment": m.get("environment") or "default",
        "trace_id": m.get("traceId"),
        "observation_id": m.get("observationId"),
        "session_id": m.get("sessionId"),
        "dataset_run_id": m.get("datasetRunId"),
        "name": name,
        "value": float(value or 0.0),
        "source": m.get("source") or "API",
        "comment": m.get("comment"),
        "metadata": m["metadata"],
        "config_id": m.get("configId"),
        "queue_id": m.get("queueId"),
        "execution_trace_id": m.get("executionTraceId"),
        "data_type": kind,
        "string_value": string_value,
        "long_string_value": long_text,
        "created_at": created_at,
        "is_deleted": 0,
        "ingestion_api_key": ingestion.get("publicKey", ""),
        "ingestion_sdk_name": ingestion.get("sdkName") or "unknown",
        "ingestion_sdk_version": ingestion.get("sdkVersion") or "unknown",
    }
