"""The read API's typed contracts: what the router asks (frozen query objects) and what it answers
(response models with Langfuse's JSON field names, types and nullability).

Response models are built with python field names and serialized by alias (camelCase). Routes
serialize with `exclude_unset`, so a field with a default is left out of the JSON unless it was set:
that is how a v2 observation omits the field groups nobody asked for, and a TEXT score its `value`.
Fields without a default are always present (null when their type allows it).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource
from tracehouse.timefmt import api_time, ch_time, within_datetime64

# --- what the router asks -------------------------------------------------------------------------

TRACE_FIELD_GROUPS = frozenset({"core", "io", "scores", "observations", "metrics"})
OBSERVATION_FIELD_GROUPS = frozenset(
    {"core", "basic", "time", "io", "metadata", "model", "usage", "prompt", "metrics", "trace_context"}
)
SCORE_FIELD_GROUPS = frozenset({"score", "trace"})  # v1 and v2 lists; `score` is always included
SCORE_V3_FIELD_GROUPS = frozenset({"core", "details", "subject", "annotation"})
TraceOrderField = Literal[
    "id", "timestamp", "name", "userId", "release", "version", "public", "bookmarked", "sessionId"
]
TRACE_ORDER_FIELDS: tuple[TraceOrderField, ...] = (
    "id",
    "timestamp",
    "name",
    "userId",
    "release",
    "version",
    "public",
    "bookmarked",
    "sessionId",
)


@dataclass(frozen=True)
class TimeRange:
    """`start` inclusive, `end` exclusive; both carry a time zone."""

    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Page:
    """Offset pagination: `page` from 1."""

    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


@dataclass(frozen=True)
class Cursor:
    """Where the previous keyset page ended: its last row's time (ClickHouse text) and id. Sent to
    clients as opaque base64 JSON."""

    moment: str
    row_id: str

    @classmethod
    def at(cls, moment: datetime, row_id: str) -> Cursor:
        return cls(moment=ch_time(moment), row_id=row_id)

    def encode(self) -> str:
        return base64.urlsafe_b64encode(json.dumps({"t": self.moment, "id": self.row_id}).encode()).decode()

    @classmethod
    def decode(cls, text: str) -> Cursor | None:
        """The position, or None when `text` is not a cursor this API returned."""
        try:
            data = json.loads(base64.urlsafe_b64decode(text.encode()))
            moment = datetime.fromisoformat(str(data["t"]))
            row_id = str(data["id"])
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        # Checked here, so a forged time answers 400 instead of failing inside ClickHouse.
        if not within_datetime64(moment if moment.tzinfo else moment.replace(tzinfo=UTC)):
            return None
        return cls.at(moment if moment.tzinfo else moment.replace(tzinfo=UTC), row_id)


@dataclass(frozen=True)
class CursorPage:
    limit: int
    after: Cursor | None = None


@dataclass(frozen=True)
class TraceOrder:
    field: TraceOrderField = "timestamp"
    direction: Literal["ASC", "DESC"] = "DESC"


# Langfuse's `filter` grammar (packages/shared/src/interfaces/filters.ts): a filter type and the
# operators it takes. `matches` (the events table's text index) and `positionInTrace` are not here.
FilterType = Literal[
    "datetime",
    "string",
    "stringOptions",
    "categoryOptions",
    "arrayOptions",
    "number",
    "stringObject",
    "numberObject",
    "boolean",
    "null",
]
FILTER_OPERATORS: dict[str, tuple[str, ...]] = {
    "datetime": (">", "<", ">=", "<="),
    "string": ("=", "contains", "does not contain", "starts with", "ends with", "is not empty"),
    "stringOptions": ("any of", "none of"),
    "categoryOptions": ("any of", "none of"),
    "arrayOptions": ("any of", "none of", "all of"),
    "number": ("=", ">", "<", ">=", "<="),
    "stringObject": ("=", "contains", "does not contain", "starts with", "ends with", "is set", "is not set"),
    "numberObject": ("=", ">", "<", ">=", "<="),
    "boolean": ("=", "<>"),
    "null": ("is null", "is not null"),
}
FilterValue = str | float | bool | datetime | tuple[str, ...] | None


@dataclass(frozen=True)
class FilterCondition:
    """One validated condition of a `filter` parameter; `column` is the column's canonical id."""

    column: str
    type: FilterType
    operator: str
    value: FilterValue = None
    key: str | None = None


Conditions = tuple[FilterCondition, ...]


@dataclass(frozen=True)
class TraceQuery:
    user_id: str | None = None
    name: str | None = None
    session_id: str | None = None
    version: str | None = None
    release: str | None = None
    tags: tuple[str, ...] = ()  # all of them
    environments: tuple[str, ...] = ()  # any of them
    timestamp: TimeRange = TimeRange()
    order: TraceOrder = TraceOrder()
    fields: frozenset[str] = TRACE_FIELD_GROUPS
    filters: Conditions = ()


@dataclass(frozen=True)
class ObservationQuery:
    """The filters of v1 and v2 observations (`session_id` and `is_root` are v2's)."""

    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    type: ObservationType | None = None
    trace_id: str | None = None
    level: ObservationLevel | None = None
    parent_observation_id: str | None = None
    is_root: bool | None = None
    version: str | None = None
    environments: tuple[str, ...] = ()
    start_time: TimeRange = TimeRange()
    filters: Conditions = ()


@dataclass(frozen=True)
class ValueComparison:
    """v1/v2 scores' `value` with its `operator`."""

    operator: Literal["<", ">", "<=", ">=", "!=", "="]
    value: float


@dataclass(frozen=True)
class ScoreQuery:
    """The filters of v1 and v2 scores. v1 (`trace_only`) lists trace scores only."""

    trace_only: bool = False
    name: str | None = None
    source: ScoreSource | None = None
    data_type: ScoreDataType | None = None
    trace_id: str | None = None
    session_id: str | None = None
    config_id: str | None = None
    queue_id: str | None = None
    dataset_run_id: str | None = None
    score_ids: tuple[str, ...] = ()
    observation_ids: tuple[str, ...] = ()
    user_id: str | None = None
    trace_tags: tuple[str, ...] = ()  # all of them
    environments: tuple[str, ...] = ()
    timestamp: TimeRange = TimeRange()
    value: ValueComparison | None = None
    include_trace: bool = True
    filters: Conditions = ()


@dataclass(frozen=True)
class ScoreValues:
    """v3's `value`: exact values of one data type (numbers for NUMERIC and BOOLEAN, labels for
    CATEGORICAL)."""

    numbers: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoreV3Query:
    """v3 filters: every list filter takes a comma-separated list (any of them)."""

    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    sources: tuple[ScoreSource, ...] = ()
    data_types: tuple[ScoreDataType, ...] = ()
    environments: tuple[str, ...] = ()
    config_ids: tuple[str, ...] = ()
    queue_ids: tuple[str, ...] = ()
    author_user_ids: tuple[str, ...] = ()
    trace_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    observation_ids: tuple[str, ...] = ()
    dataset_run_ids: tuple[str, ...] = ()
    values: ScoreValues | None = None
    value_min: float | None = None  # inclusive
    value_max: float | None = None  # inclusive
    timestamp: TimeRange = TimeRange()
    filters: Conditions = ()


@dataclass(frozen=True)
class SessionQuery:
    environments: tuple[str, ...] = ()  # sessions with a trace in any of them
    created_at: TimeRange = TimeRange()


class DeleteTracesRequest(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    trace_ids: list[str] = Field(min_length=1, max_length=1000)


# --- what it answers ------------------------------------------------------------------------------

# Langfuse's timestamp form, 2026-11-01T12:00:00.000Z (UTC, milliseconds).
ApiTime = Annotated[
    datetime, PlainSerializer(api_time, return_type=str), WithJsonSchema({"type": "string", "format": "date-time"})
]


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class MetaResponse(_Camel):
    page: int
    limit: int
    total_items: int
    total_pages: int


class _TraceFields(_Camel):
    id: str
    external_id: str | None
    timestamp: ApiTime
    name: str | None
    user_id: str | None
    release: str | None
    version: str | None
    project_id: str
    environment: str
    public: bool
    bookmarked: bool
    tags: list[str]
    session_id: str | None
    metadata: dict[str, Any] | None = Field(description="null unless the io field group is requested")
    input: Any
    output: Any
    created_at: ApiTime
    updated_at: ApiTime


class TraceWithDetails(_TraceFields):
    observations: list[str] = Field(description="Observation ids ([] unless the observations group is requested)")
    scores: list[str] = Field(description="Score ids ([] unless the scores group is requested)")
    latency: float = Field(description="Seconds; -1 unless the metrics group is requested")
    total_cost: float = Field(description="USD; -1 unless the metrics group is requested")
    html_path: str


class Traces(_Camel):
    data: list[TraceWithDetails]
    meta: MetaResponse


class Usage(_Camel):
    """Deprecated by Langfuse in favour of usageDetails; still sent for old SDKs."""

    unit: str
    input: int
    output: int
    total: int


class Observation(_Camel):
    """Langfuse's ObservationsView (v1 observations, and a trace's observations)."""

    id: str
    project_id: str
    trace_id: str
    parent_observation_id: str | None
    name: str | None
    type: ObservationType
    environment: str
    start_time: ApiTime
    end_time: ApiTime | None
    version: str | None
    created_at: ApiTime
    updated_at: ApiTime
    input: Any
    output: Any
    metadata: dict[str, Any]
    level: ObservationLevel
    status_message: str | None
    model: str | None
    model_parameters: Any
    completion_start_time: ApiTime | None
    prompt_id: str | None
    prompt_name: str | None
    prompt_version: int | None
    usage_details: dict[str, int]
    cost_details: dict[str, float]
    usage: Usage
    unit: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    usage_pricing_tier_name: str | None
    usage_pricing_tier_id: str | None
    model_id: str | None
    input_price: float | None
    output_price: float | None
    total_price: float | None
    calculated_input_cost: float | None
    calculated_output_cost: float | None
    calculated_total_cost: float
    latency: float | None
    time_to_first_token: float | None


class ObservationsViews(_Camel):
    data: list[Observation]
    meta: MetaResponse


class ObservationV2(_Camel):
    """Langfuse's ObservationV2: the core fields always, each other group only when requested."""

    # core
    id: str
    trace_id: str
    start_time: ApiTime
    end_time: ApiTime | None
    project_id: str
    parent_observation_id: str | None
    type: ObservationType
    # basic
    name: str | None = None
    level: ObservationLevel | None = None
    status_message: str | None = None
    version: str | None = None
    environment: str | None = None
    is_root_observation: bool | None = None
    # basic, from the observation's trace (null when the trace is not stored)
    bookmarked: bool | None = None
    public: bool | None = None
    user_id: str | None = None
    session_id: str | None = None
    # time
    completion_start_time: ApiTime | None = None
    created_at: ApiTime | None = None
    updated_at: ApiTime | None = None
    # io: the stored text, not parsed (Langfuse's parseIoAsJson=false)
    input: str | None = None
    output: str | None = None
    # metadata: every value in full (nothing is truncated, so `expandMetadata` has nothing to expand)
    metadata: dict[str, Any] | None = None
    # model
    model: str | None = None
    internal_model_id: str | None = None
    model_parameters: Any = None
    model_id: str | None = None  # the matched model (Langfuse's), with its default tier's prices
    input_price: str | None = None  # USD per unit, as decimal strings
    output_price: str | None = None
    total_price: str | None = None
    # usage
    usage_details: dict[str, int] | None = None
    cost_details: dict[str, float] | None = None
    total_cost: float | None = None
    usage_pricing_tier_name: str | None = None
    # prompt
    prompt_id: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    # metrics
    latency: float | None = None
    time_to_first_token: float | None = None
    # trace_context, from the observation's trace
    trace_name: str | None = None
    tags: list[str] | None = None
    release: str | None = None


class ObservationsV2Meta(_Camel):
    cursor: str | None = Field(None, description="The next page's cursor; omitted on the last page")


class ObservationsV2Response(_Camel):
    data: list[ObservationV2]
    meta: ObservationsV2Meta


class Score(_Camel):
    """Langfuse's Score (v1/v2 shape). TEXT scores have no `value`."""

    id: str
    project_id: str
    environment: str
    name: str
    value: float | None = Field(None, description="Omitted for TEXT scores")
    source: ScoreSource
    author_user_id: str | None
    comment: str | None
    metadata: dict[str, Any]
    config_id: str | None
    queue_id: str | None
    execution_trace_id: str | None
    created_at: ApiTime
    updated_at: ApiTime
    timestamp: ApiTime
    trace_id: str | None
    observation_id: str | None
    session_id: str | None
    dataset_run_id: str | None
    data_type: ScoreDataType
    string_value: str | None


class ScoreTrace(_Camel):
    """The scored trace's attributes; all null when the trace is not (or no longer) stored."""

    user_id: str | None
    tags: list[str] | None
    environment: str | None
    session_id: str | None


class ScoreWithTrace(Score):
    trace: ScoreTrace | None = Field(description="null for scores not on a trace (v2 only)")


class GetScoresResponse(_Camel):
    data: list[ScoreWithTrace]
    meta: MetaResponse


class TraceWithFullDetails(_TraceFields):
    observations: list[Observation]
    scores: list[Score]
    latency: float = Field(description="Seconds from the first observation's start to the last one's end")
    total_cost: float = Field(description="USD")
    html_path: str


class ScoreSubject(_Camel):
    kind: Literal["trace", "observation", "session"]
    id: str
    trace_id: str | None = Field(None, description="Only for kind observation")


class ScoreV3(_Camel):
    """The core fields always; `details` (comment, configId, metadata), `subject` and `annotation`
    (authorUserId, queueId) only when their group is requested (all of them when `fields` is absent)."""

    id: str
    project_id: str
    name: str
    source: ScoreSource
    timestamp: ApiTime
    environment: str
    created_at: ApiTime
    updated_at: ApiTime
    data_type: ScoreDataType
    value: float | bool | str = Field(description="NUMERIC: number, BOOLEAN: boolean, others: string")
    # details
    comment: str | None = None
    config_id: str | None = None
    metadata: dict[str, Any] | None = None
    # annotation
    author_user_id: str | None = None
    queue_id: str | None = None
    # subject
    subject: ScoreSubject | None = None


class GetScoresV3Meta(_Camel):
    limit: int
    cursor: str | None = Field(None, description="The next page's cursor; omitted on the last page")


class GetScoresV3Response(_Camel):
    data: list[ScoreV3]
    meta: GetScoresV3Meta


class Session(_Camel):
    id: str
    created_at: ApiTime
    project_id: str
    environment: str


class PaginatedSessions(_Camel):
    data: list[Session]
    meta: MetaResponse


class SessionWithTraces(Session):
    traces: list[TraceWithDetails]


class DeleteTraceResponse(_Camel):
    message: str


class DeleteScoreResponse(_Camel):
    message: str


class Organization(_Camel):
    id: str
    name: str


class Project(_Camel):
    id: str
    name: str
    metadata: dict[str, Any]
    organization: Organization
    retention_days: int | None


class Projects(_Camel):
    data: list[Project]
