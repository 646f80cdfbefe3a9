"""Langfuse ingestion events: validation and normalization, one event at a time.

Each event of a batch is checked on its own so one bad event fails alone (207 semantics). Unlike
Langfuse, an event whose body has no `id` is rejected rather than reported as a success and then
silently not stored; a score without an id gets one generated, as the scores endpoint does.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from tracehouse.clickhouse import catalog
from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource

MAX_EVENT_BYTES = 1_000_000  # one event (Langfuse's batch limit is 4.5 MB; an event this large is suspect)
ID_MAX = 800
# Stored with each raw batch: batches validated by older rules are checked again when processed.
VALIDATION_VERSION = 2

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


# --- value domains, from the table catalog --------------------------------------------------------
# Every value is checked against the column it lands in, so an event that is accepted can always be
# written: one unwritable value would otherwise fail the whole flush it shares with other projects.
_TRACES = catalog.table("traces")
_OBSERVATIONS = catalog.table("observations")
_SCORES = catalog.table("scores")
_EVENT_TIME = catalog.table("ingestion_event_log").writable_domain("event_time")
_ROW_TIME = _TRACES.writable_domain("timestamp")  # rows default to the event's time: it must fit the key too
_USAGE = _OBSERVATIONS.column("usage_details").domain.element
_COST = _OBSERVATIONS.column("cost_details").domain.element
_PROMPT_VERSION = _OBSERVATIONS.writable_domain("prompt_version")
assert _USAGE is not None and _COST is not None


def _day(moment: Any) -> str:
    return moment.date().isoformat() if isinstance(moment, datetime) else str(moment)


def parse_timestamp(value: Any, domain: catalog.ValueDomain) -> datetime:
    """An ISO 8601 string (a number is not a timestamp) inside the column's range; no offset means UTC."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    assert isinstance(domain.minimum, datetime) and isinstance(domain.maximum, datetime)
    if not domain.minimum <= moment <= domain.maximum:
        raise ValueError(f"must be between {_day(domain.minimum)} and {_day(domain.maximum)}")
    return moment.astimezone(UTC)


def _timestamp(domain: catalog.ValueDomain) -> Any:
    return BeforeValidator(lambda value: None if value is None else parse_timestamp(value, domain))


def count_in(value: Any, domain: catalog.ValueDomain, what: str) -> int:
    """A non-negative whole number the integer column can hold (JSON's 3.0 is 3; a string is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, not {type(value).__name__}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} must be a whole number")
    assert isinstance(domain.minimum, int) and isinstance(domain.maximum, int)
    if not domain.minimum <= value <= domain.maximum:
        raise ValueError(f"{what} must be between {domain.minimum} and {domain.maximum}")
    return int(value)


def amount_in(value: Any, domain: catalog.ValueDomain, what: str) -> float:
    """A non-negative amount the Decimal column can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"{what} must be a number")
    assert isinstance(domain.maximum, Decimal)
    if not 0 <= value <= domain.maximum:
        raise ValueError(f"{what} must be between 0 and {domain.maximum}")
    return float(value)


def _counts(raw: dict[str, Any], where: str) -> dict[str, int]:
    """A flat usage map; null values mean "not given" and are dropped."""
    assert _USAGE is not None
    return {str(k): count_in(v, _USAGE, f"{where}.{k}") for k, v in raw.items() if v is not None}


def _openai_usage(raw: dict[str, Any], prefix_in: str, prefix_out: str) -> dict[str, int] | None:
    """OpenAI chat ({prompt,completion}_tokens) or responses ({input,output}_tokens) usage objects."""
    keys = (f"{prefix_in}_tokens", f"{prefix_out}_tokens", "total_tokens")
    if not all(key in raw for key in keys):
        return None
    assert _USAGE is not None
    inp, out, total = (count_in(raw[key], _USAGE, f"usageDetails.{key}") for key in keys)
    result = {"input": inp, "output": out, "total": total}
    for side, key in (("input", f"{prefix_in}_tokens_details"), ("output", f"{prefix_out}_tokens_details")):
        details = raw.get(key)
        if details is None:
            continue
        if not isinstance(details, dict):
            raise ValueError(f"usageDetails.{key} must be an object")
        for name, count in _counts(details, f"usageDetails.{key}").items():
            result[f"{side}_{name}"] = count
            result[side] = max(0, result[side] - count)
    return result


def normalize_usage_details(raw: Any) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("usageDetails must be an object of token counts")
    for prefixes in (("prompt", "completion"), ("input", "output")):
        converted = _openai_usage(raw, *prefixes)
        if converted is not None:
            return converted
    return _counts(raw, "usageDetails") or None


def normalize_legacy_usage(raw: Any) -> tuple[dict[str, int] | None, dict[str, float] | None]:
    """Legacy `usage` {input, output, total, unit, *Cost} or {promptTokens, completionTokens, totalTokens}."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        raise ValueError("usage must be an object")
    assert _USAGE is not None and _COST is not None
    aliases = {"promptTokens": "input", "completionTokens": "output", "totalTokens": "total"}
    usage = {}
    for key in ("input", "output", "total", "promptTokens", "completionTokens", "totalTokens"):
        if raw.get(key) is not None:
            usage[aliases.get(key, key)] = count_in(raw[key], _USAGE, f"usage.{key}")
    costs = {}
    for key, target in (("inputCost", "input"), ("outputCost", "output"), ("totalCost", "total")):
        if raw.get(key) is not None:
            costs[target] = amount_in(raw[key], _COST, f"usage.{key}")
    return usage or None, costs or None


def normalize_cost_details(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("costDetails must be an object of amounts")
    assert _COST is not None
    return {str(k): amount_in(v, _COST, f"costDetails.{k}") for k, v in raw.items() if v is not None} or None


def _environment(value: Any) -> str:
    if value is None:
        return "default"
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return normalize_environment(value)


def _check_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if len(value) > ID_MAX or "\r" in value:
        raise ValueError(f"must be at most {ID_MAX} characters without carriage returns")
    return value


# Strict as Langfuse's schemas: a string is not a number, an object or a boolean, and the reverse.
Str = Annotated[str, Strict()]
Id = Annotated[str, BeforeValidator(_check_id)]
Environment = Annotated[str, BeforeValidator(_environment)]
RowTime = Annotated[datetime | None, _timestamp(_ROW_TIME)]
ObservationEnd = Annotated[datetime | None, _timestamp(_OBSERVATIONS.writable_domain("end_time"))]
FirstToken = Annotated[datetime | None, _timestamp(_OBSERVATIONS.writable_domain("completion_start_time"))]
PromptVersion = Annotated[
    int | None, BeforeValidator(lambda v: None if v is None else count_in(v, _PROMPT_VERSION, "value"))
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: Id
    environment: Environment = "default"


class TraceBody(_Body):
    timestamp: RowTime = None
    name: Str | None = Field(None, max_length=1000)
    user_id: Str | None = Field(None, alias="userId")
    session_id: Str | None = Field(None, alias="sessionId")
    release: Str | None = None
    version: Str | None = None
    metadata: Any = None
    tags: list[Str] | None = None
    public: StrictBool | None = None
    input: Any = None
    output: Any = None


class ObservationBody(_Body):
    trace_id: Id | None = Field(None, alias="traceId")
    type: Str | None = None  # legacy observation-create/update carry it in the body
    name: Str | None = None
    start_time: RowTime = Field(None, alias="startTime")
    end_time: ObservationEnd = Field(None, alias="endTime")
    completion_start_time: FirstToken = Field(None, alias="completionStartTime")
    metadata: Any = None
    input: Any = None
    output: Any = None
    level: ObservationLevel | None = None
    status_message: Str | None = Field(None, alias="statusMessage")
    parent_observation_id: Id | None = Field(None, alias="parentObservationId")
    version: Str | None = None
    model: Str | None = None
    model_parameters: dict[str, Any] | None = Field(None, alias="modelParameters")
    usage: Any = None
    usage_details: Any = Field(None, alias="usageDetails")
    cost_details: Any = Field(None, alias="costDetails")
    prompt_name: Str | None = Field(None, alias="promptName")
    prompt_version: PromptVersion = Field(None, alias="promptVersion")

    @model_validator(mode="after")
    def _prompt_pair(self) -> ObservationBody:
        if (self.prompt_name is None) != (self.prompt_version is None):
            raise ValueError("promptName and promptVersion must be given together")
        return self


class ScoreBody(_Body):
    id: Id = Field(default_factory=lambda: str(uuid.uuid4()))
    name: Str = Field(min_length=1)
    value: StrictFloat | StrictInt | Str
    trace_id: Id | None = Field(None, alias="traceId")
    observation_id: Id | None = Field(None, alias="observationId")
    session_id: Str | None = Field(None, alias="sessionId")
    dataset_run_id: Str | None = Field(None, alias="datasetRunId")
    comment: Str | None = None
    metadata: Any = None
    source: ScoreSource = ScoreSource.API
    data_type: ScoreDataType | None = Field(None, alias="dataType")
    config_id: Str | None = Field(None, alias="configId")
    queue_id: Str | None = Field(None, alias="queueId")
    execution_trace_id: Str | None = Field(None, alias="executionTraceId")

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
        if isinstance(self.value, float) and self.value in (float("inf"), float("-inf")):
            raise ValueError("value must be a finite number")
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

    id: Id
    timestamp: Annotated[datetime, BeforeValidator(lambda value: parse_timestamp(value, _ENVELOPE_TIME))]
    type: Str
    body: dict[str, Any]


# The event's time is its rows' time when the body has none, so it must fit both places.
_ENVELOPE_TIME = catalog.ValueDomain(
    catalog.Kind.DATETIME,
    minimum=max(_EVENT_TIME.minimum, _ROW_TIME.minimum),  # type: ignore[type-var]
    maximum=min(_EVENT_TIME.maximum, _ROW_TIME.maximum),  # type: ignore[type-var]
)


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


def _invalid(message: str) -> RejectedEvent:
    return RejectedEvent(400, "Invalid request data", message)


def validate_event(raw: Any) -> dict[str, Any] | None:
    """Validate and normalize one raw event; None for `sdk-log` (logged, never stored).

    Raises RejectedEvent for anything that could not be stored exactly. Normalizing an already
    normalized event gives it back unchanged, so logged events can be checked again when read.
    """
    if not isinstance(raw, dict):
        raise _invalid("event must be a JSON object")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(_explain(exc)) from None
    if envelope.type == "sdk-log":
        return None
    if envelope.type not in KNOWN_EVENTS:
        raise _invalid(f"type: unknown event type {envelope.type!r}")
    entity = entity_of(envelope.type)
    models: dict[str, type[_Body]] = {"trace": TraceBody, "score": ScoreBody, "observation": ObservationBody}
    try:
        body = models[entity].model_validate(envelope.body)
    except ValidationError as exc:
        raise _invalid(_explain(exc).replace("id: Field required", "body.id: Field required")) from None
    try:
        normalized = _normalized(envelope, entity, body)
    except ValueError as exc:
        # pydantic refuses to serialize beyond its depth limit; say what that means for the client.
        raise _invalid("event is nested too deeply" if "depth" in str(exc) else str(exc)) from None
    return {
        "id": envelope.id,
        "timestamp": envelope.timestamp.isoformat(),
        "type": envelope.type,
        "entity": entity,
        "body": normalized,
    }


def _normalized(envelope: Envelope, entity: str, body: _Body) -> dict[str, Any]:
    # Only fields the client sent: an explicit null overwrites on merge, an absent field does not.
    normalized = body.model_dump(mode="json", by_alias=True, exclude_unset=True)
    normalized["id"] = body.id  # a score's generated id must be stored with the event
    if isinstance(body, ScoreBody):
        normalized["dataType"] = body.data_type.value if body.data_type else None
    if entity != "observation":
        return normalized
    kind = envelope.type.split("-")[0]
    obs_type = OBSERVATION_TYPES.get(kind) or str(normalized.get("type") or "SPAN").upper()
    normalized["type"] = obs_type if obs_type in OBSERVATION_TYPES.values() else "SPAN"
    usage, costs = normalize_legacy_usage(normalized.pop("usage", None))
    details = normalize_usage_details(normalized.get("usageDetails"))
    normalized["usageDetails"] = {**(usage or {}), **(details or {})} or None
    if usage and not details and "total" not in usage and {"input", "output"} <= usage.keys():
        normalized["usageDetails"]["total"] = usage["input"] + usage["output"]
    assert _USAGE is not None and isinstance(_USAGE.maximum, int)
    if normalized["usageDetails"] and sum(normalized["usageDetails"].values()) > _USAGE.maximum:
        raise ValueError("usageDetails: the counts add up to more than a UInt64 holds")
    cost_details = {**(costs or {}), **(normalize_cost_details(normalized.get("costDetails")) or {})}
    normalized["costDetails"] = cost_details or None
    for key in ("usageDetails", "costDetails"):
        if normalized[key] is None:
            del normalized[key]
    return normalized


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
