"""Langfuse ingestion events: validation and normalization, one event at a time.

Each event of a batch is checked on its own so one bad event fails alone (207 semantics). Unlike
Langfuse, an event whose body has no `id` is rejected rather than reported as a success and then
silently not stored; a score without an id gets one generated, as the scores endpoint does.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource

MAX_EVENT_BYTES = 1_000_000  # one event (Langfuse's batch limit is 4.5 MB; an event this large is suspect)
MAX_BATCH_BYTES = 4_500_000
ID_MAX = 800

# "<kind>-create" event names -> the observation type they create.
OBSERVATION_TYPES = {kind.value.lower(): kind.value for kind in ObservationType}
TRACE_EVENTS = {"trace-create"}
SCORE_EVENTS = {"score-create"}
OBSERVATION_EVENTS = {f"{kind}-create" for kind in OBSERVATION_TYPES} | {
    "span-update",
    "generation-update",
    "observation-create",
    "observation-update",
}
KNOWN_EVENTS = TRACE_EVENTS | SCORE_EVENTS | OBSERVATION_EVENTS | {"sdk-log"}

_ENV_PATTERN = re.compile(r"^[a-z0-9_-]+$")


def normalize_environment(value: Any) -> str:
    """Langfuse's rule: lower-case, strip `langfuse` prefixes, <= 40 chars, else `default`."""
    if not isinstance(value, str) or not value:
        return "default"
    env = value.lower()
    while True:
        stripped = re.sub(r"^langfuse[-_]?", "", env)
        if stripped == env:
            break
        env = stripped
    env = env[:40]
    return env if env and _ENV_PATTERN.match(env) else "default"


def _non_negative_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _openai_usage(raw: dict[str, Any], prefix_in: str, prefix_out: str) -> dict[str, int] | None:
    """OpenAI chat ({prompt,completion}_tokens) or responses ({input,output}_tokens) usage objects."""
    inp, out, total = raw.get(f"{prefix_in}_tokens"), raw.get(f"{prefix_out}_tokens"), raw.get("total_tokens")
    if not all(isinstance(v, int) for v in (inp, out, total)):
        return None
    result = {"input": int(inp), "output": int(out), "total": int(total)}  # type: ignore[arg-type]
    for side, key in (("input", f"{prefix_in}_tokens_details"), ("output", f"{prefix_out}_tokens_details")):
        details = raw.get(key) or {}
        if isinstance(details, dict):
            for name, count in details.items():
                n = _non_negative_int(count)
                if n is not None:
                    result[f"{side}_{name}"] = n
                    result[side] = max(0, result[side] - n)
    return result


def normalize_usage_details(raw: Any) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    for prefixes in (("prompt", "completion"), ("input", "output")):
        converted = _openai_usage(raw, *prefixes)
        if converted is not None:
            return converted
    kept = {str(k): n for k, v in raw.items() if (n := _non_negative_int(v)) is not None}
    return kept or None


def normalize_legacy_usage(raw: Any) -> tuple[dict[str, int] | None, dict[str, float] | None]:
    """Legacy `usage` {input, output, total, *Cost} or {promptTokens, completionTokens, totalTokens}."""
    if not isinstance(raw, dict) or not raw:
        return None, None
    aliases = {"promptTokens": "input", "completionTokens": "output", "totalTokens": "total"}
    usage = {}
    for key in ("input", "output", "total", "promptTokens", "completionTokens", "totalTokens"):
        n = _non_negative_int(raw.get(key))
        if n is not None:
            usage[aliases.get(key, key)] = n
    costs = {}
    for key, target in (("inputCost", "input"), ("outputCost", "output"), ("totalCost", "total")):
        value = raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            costs[target] = float(value)
    return usage or None, costs or None


def normalize_cost_details(raw: Any) -> dict[str, float] | None:
    if not isinstance(raw, dict):
        return None
    kept = {
        str(k): float(v)
        for k, v in raw.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf")
    }
    return kept or None


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    environment: str = "default"


def _check_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if len(value) > ID_MAX or "\r" in value:
        raise ValueError(f"must be at most {ID_MAX} characters without carriage returns")
    return value


class TraceBody(_Body):
    id: str
    timestamp: datetime | None = None
    name: str | None = Field(None, max_length=1000)
    user_id: str | None = Field(None, alias="userId")
    session_id: str | None = Field(None, alias="sessionId")
    release: str | None = None
    version: str | None = None
    environment: str = "default"
    metadata: Any = None
    tags: list[str] | None = None
    public: bool | None = None
    input: Any = None
    output: Any = None

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))
    _env = field_validator("environment", mode="before")(classmethod(lambda cls, v: normalize_environment(v)))


class ObservationBody(_Body):
    id: str
    trace_id: str | None = Field(None, alias="traceId")
    type: str | None = None  # legacy observation-create/update carry it in the body
    name: str | None = None
    start_time: datetime | None = Field(None, alias="startTime")
    end_time: datetime | None = Field(None, alias="endTime")
    completion_start_time: datetime | None = Field(None, alias="completionStartTime")
    environment: str = "default"
    metadata: Any = None
    input: Any = None
    output: Any = None
    level: ObservationLevel | None = None
    status_message: str | None = Field(None, alias="statusMessage")
    parent_observation_id: str | None = Field(None, alias="parentObservationId")
    version: str | None = None
    model: str | None = None
    model_parameters: dict[str, Any] | None = Field(None, alias="modelParameters")
    usage: Any = None
    usage_details: Any = Field(None, alias="usageDetails")
    cost_details: Any = Field(None, alias="costDetails")
    prompt_name: str | None = Field(None, alias="promptName")
    prompt_version: int | None = Field(None, alias="promptVersion")

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))
    _env = field_validator("environment", mode="before")(classmethod(lambda cls, v: normalize_environment(v)))

    @model_validator(mode="after")
    def _prompt_pair(self) -> ObservationBody:
        if (self.prompt_name is None) != (self.prompt_version is None):
            raise ValueError("promptName and promptVersion must be given together")
        return self


class ScoreBody(_Body):
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    name: str = Field(min_length=1)
    value: float | str
    trace_id: str | None = Field(None, alias="traceId")
    observation_id: str | None = Field(None, alias="observationId")
    session_id: str | None = Field(None, alias="sessionId")
    dataset_run_id: str | None = Field(None, alias="datasetRunId")
    environment: str = "default"
    comment: str | None = None
    metadata: Any = None
    source: ScoreSource = ScoreSource.API
    data_type: ScoreDataType | None = Field(None, alias="dataType")
    config_id: str | None = Field(None, alias="configId")
    queue_id: str | None = Field(None, alias="queueId")
    execution_trace_id: str | None = Field(None, alias="executionTraceId")

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))
    _env = field_validator("environment", mode="before")(classmethod(lambda cls, v: normalize_environment(v)))

    @model_validator(mode="after")
    def _consistent(self) -> ScoreBody:
        refs = [self.trace_id is not None, self.session_id is not None, self.dataset_run_id is not None]
        if sum(refs) != 1:
            raise ValueError("exactly one of traceId, sessionId or datasetRunId is required")
        if self.observation_id is not None and self.trace_id is None:
            raise ValueError("observationId requires traceId")
        kind = self.data_type or (ScoreDataType.CATEGORICAL if isinstance(self.value, str) else ScoreDataType.NUMERIC)
        if kind in ("NUMERIC", "BOOLEAN") and isinstance(self.value, str):
            raise ValueError(f"{kind} scores need a numeric value")
        if kind == "BOOLEAN" and self.value not in (0, 1):
            raise ValueError("BOOLEAN scores need value 0 or 1")
        if kind in ("CATEGORICAL", "TEXT", "CORRECTION") and not isinstance(self.value, str):
            raise ValueError(f"{kind} scores need a string value")
        if kind == "TEXT" and not 1 <= len(str(self.value)) <= 500:
            raise ValueError("TEXT scores need 1 to 500 characters")
        self.data_type = kind
        return self


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    timestamp: datetime
    type: str
    body: dict[str, Any]

    _id = field_validator("id")(classmethod(lambda cls, v: _check_id(v)))

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must include a time zone offset (Z or +hh:mm)")
        return value


class RejectedEvent(Exception):
    def __init__(self, status: int, message: str, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.message = message
        self.error = error


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "event"
        parts.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(parts)


def entity_of(event_type: str) -> str:
    if event_type in TRACE_EVENTS:
        return "trace"
    if event_type in SCORE_EVENTS:
        return "score"
    return "observation"


def validate_event(raw: Any) -> dict[str, Any] | None:
    """Validate and normalize one raw event; None for `sdk-log` (logged, never stored)."""
    if not isinstance(raw, dict):
        raise RejectedEvent(400, "Invalid request data", "event must be a JSON object")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise RejectedEvent(400, "Invalid request data", _explain(exc)) from None
    if envelope.type == "sdk-log":
        return None
    if envelope.type not in KNOWN_EVENTS:
        raise RejectedEvent(400, "Invalid request data", f"type: unknown event type {envelope.type!r}")
    entity = entity_of(envelope.type)
    models: dict[str, type[_Body]] = {"trace": TraceBody, "score": ScoreBody, "observation": ObservationBody}
    model = models[entity]
    try:
        body = model.model_validate(envelope.body)
    except ValidationError as exc:
        raise RejectedEvent(
            400, "Invalid request data", _explain(exc).replace("id: Field required", "body.id: Field required")
        ) from None
    # Only fields the client sent: an explicit null overwrites on merge, an absent field does not.
    normalized = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    normalized["id"] = body.id  # a score's generated id must be stored with the event
    if isinstance(body, ScoreBody):
        normalized["dataType"] = body.data_type.value if body.data_type else None
    if entity == "observation":
        kind = envelope.type.split("-")[0]
        obs_type = OBSERVATION_TYPES.get(kind) or str(normalized.get("type") or "SPAN").upper()
        normalized["type"] = obs_type if obs_type in OBSERVATION_TYPES.values() else "SPAN"
        usage, costs = normalize_legacy_usage(normalized.pop("usage", None))
        details = normalize_usage_details(normalized.get("usageDetails"))
        normalized["usageDetails"] = {**(usage or {}), **(details or {})} or None
        if usage and not details and "total" not in usage and {"input", "output"} <= usage.keys():
            normalized["usageDetails"]["total"] = usage["input"] + usage["output"]
        cost_details = {**(costs or {}), **(normalize_cost_details(normalized.get("costDetails")) or {})}
        normalized["costDetails"] = cost_details or None
        for key in ("usageDetails", "costDetails"):
            if normalized[key] is None:
                del normalized[key]
    return {
        "id": envelope.id,
        "timestamp": envelope.timestamp.isoformat(),
        "type": envelope.type,
        "entity": entity,
        "body": normalized,
    }


# --- request and response bodies (Langfuse's public schemas) ------------------------------------
class IngestionEvent(BaseModel):
    """One event of a batch; `body` is checked per event type (traces, observations, scores)."""

    id: str
    timestamp: str = Field(description="ISO 8601 with a time zone offset")
    type: str = Field(description="trace-create, span-create, generation-update, score-create, sdk-log, ...")
    body: dict[str, Any]
    metadata: Any = None


class IngestionRequest(BaseModel):
    """The body of POST /api/public/ingestion. Events are validated one by one (a bad one fails alone)."""

    batch: list[Any] = Field(json_schema_extra={"items": IngestionEvent.model_json_schema()})
    metadata: Any = None


class IngestionSuccess(BaseModel):
    id: str
    status: int


class IngestionError(BaseModel):
    id: str
    status: int
    message: str | None = None
    error: str | None = None


class IngestionResponse(BaseModel):
    """HTTP 207: each event succeeded or failed on its own."""

    successes: list[IngestionSuccess]
    errors: list[IngestionError]


class OtelPartialSuccess(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    rejected_spans: int = Field(alias="rejectedSpans")
    error_message: str = Field(alias="errorMessage")


class OtelExportResponse(BaseModel):
    """OTLP/HTTP's ExportTraceServiceResponse in JSON: empty, or the spans that were rejected."""

    model_config = ConfigDict(populate_by_name=True)

    partial_success: OtelPartialSuccess | None = Field(None, alias="partialSuccess")


class ScoreCreated(BaseModel):
    """POST /api/public/scores with one score object."""

    id: str


class ScoreBatchAccepted(BaseModel):
    """POST /api/public/scores with an array, every score accepted (HTTP 202)."""

    message: Literal["Accepted"] = "Accepted"


class ScoreBatchError(BaseModel):
    id: str | None = None
    status: int
    message: str
    error: str | None = None


class ScoreBatchResults(BaseModel):
    """POST /api/public/scores with an array, some rejected (HTTP 207): counts and the errors."""

    accepted: int
    rejected: int
    errors: list[ScoreBatchError]
