"""Langfuse's public read API (paths, parameters, JSON field names, page `meta`).

Each route parses its parameters into a query object, asks the `ReadService` and returns its model;
the SQL lives in `queries/sql.py`, the `filter` grammar in `queries/filters.py`. Responses are
serialized with `exclude_unset` (see models.py). A query parameter a route does not declare is a
400 naming it (`known_parameters`): nothing a client sends is silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tracehouse.api_common import MAX_JSON_BODY_BYTES, BadParameter, NotFound, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource, names
from tracehouse.queries.filters import describe, parse_filter
from tracehouse.queries.models import (
    OBSERVATION_FIELD_GROUPS,
    SCORE_FIELD_GROUPS,
    SCORE_V3_FIELD_GROUPS,
    TRACE_FIELD_GROUPS,
    TRACE_ORDER_FIELDS,
    Cursor,
    CursorPage,
    DeleteScoreResponse,
    DeleteTraceResponse,
    DeleteTracesRequest,
    GetScoresResponse,
    GetScoresV3Response,
    Observation,
    ObservationQuery,
    ObservationsV2Response,
    ObservationsViews,
    Page,
    PaginatedSessions,
    Projects,
    Score,
    ScoreQuery,
    ScoreV3Query,
    ScoreValues,
    ScoreWithTrace,
    SessionQuery,
    SessionWithTraces,
    TimeRange,
    TraceOrder,
    TraceQuery,
    Traces,
    TraceWithFullDetails,
    ValueComparison,
)
from tracehouse.queries.service import ReadService
from tracehouse.queries.sql import OBSERVATION_COLUMNS, SCORE_COLUMNS, TRACE_COLUMNS
from tracehouse.runtime import Services
from tracehouse.timefmt import within_datetime64


def _query_names(dependant: Dependant) -> set[str]:
    found = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        found |= _query_names(sub)
    return found


async def known_parameters(request: Request, auth: ProjectAuth = Depends(require_project)) -> ProjectAuth:
    """FastAPI ignores query parameters a route does not declare; a filter ignored that way returns
    wrong data. So every read route answers an undeclared parameter with a 400 naming it (after auth,
    so an unauthenticated caller learns nothing)."""
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        known = _query_names(route.dependant)
        if unknown := sorted(set(request.query_params) - known):
            takes = ", ".join(sorted(known)) or "no query parameters"
            raise BadParameter(unknown[0], f"not a parameter of this endpoint (it takes {takes})")
    return auth


router = APIRouter(tags=["read"], dependencies=[Depends(known_parameters)])
_LIST = error_responses(400, 401, 503, 504)
_ONE = error_responses(400, 401, 404, 503, 504)
E = TypeVar("E", bound=StrEnum)


def read_service(services: Services = Depends(get_services)) -> ReadService:
    return ReadService(services.clickhouse, services.metadata)


# --- parameters ---------------------------------------------------------------------------------
def _split(values: list[str] | str | None) -> tuple[str, ...]:
    """Repeated query params or comma-separated values, as Langfuse accepts both."""
    given = [values] if isinstance(values, str) else values or []
    return tuple(item.strip() for value in given for item in value.split(",") if item.strip())


MAX_PAGE = 2**31 - 1  # Langfuse's page is a 32-bit integer


def _page(page: int, limit: int) -> Page:
    if not 1 <= page <= MAX_PAGE:
        raise BadParameter("page", f"must be between 1 and {MAX_PAGE}")
    if not 1 <= limit <= 100:
        raise BadParameter("limit", "must be between 1 and 100")
    return Page(page=page, limit=limit)


def _cursor_page(limit: int, cursor: str | None, max_limit: int = 1000) -> CursorPage:
    if not 1 <= limit <= max_limit:
        raise BadParameter("limit", f"must be between 1 and {max_limit}")
    if cursor is None:
        return CursorPage(limit=limit)
    after = Cursor.decode(cursor)
    if after is None:
        raise BadParameter("cursor", "not a cursor returned by this API")
    return CursorPage(limit=limit, after=after)


def _moment(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise BadParameter(name, "must include a time zone offset (Z or +hh:mm)")
    # ClickHouse's DateTime64 covers 1900-2299.
    if not within_datetime64(value):
        raise BadParameter(name, "must be between 1900-01-01 and 2299-12-31")
    return value


def _time_range(start: datetime | None, end: datetime | None, names: tuple[str, str]) -> TimeRange:
    return TimeRange(start=_moment(start, names[0]), end=_moment(end, names[1]))


def _one_of(enum: type[E], parameter: str, values: tuple[str, ...]) -> tuple[E, ...]:
    try:
        return tuple(enum(value) for value in values)
    except ValueError:
        raise BadParameter(parameter, f"expected one of {names(enum)}") from None


def _trace_order(order_by: str | None) -> TraceOrder:
    if not order_by:
        return TraceOrder()
    field, _, direction = order_by.partition(".")
    for known in TRACE_ORDER_FIELDS:
        if field == known and direction.lower() in ("asc", "desc"):
            return TraceOrder(field=known, direction="ASC" if direction.lower() == "asc" else "DESC")
    raise BadParameter("orderBy", f"expected <column>.<asc|desc> with column one of {', '.join(TRACE_ORDER_FIELDS)}")


def _groups(fields: str | None, known: frozenset[str], default: frozenset[str], always: str) -> frozenset[str]:
    """Field groups: the default when absent, `always` included; an unknown group is a 400 (Langfuse
    drops unknown trace groups silently, and a typo would then silently drop data)."""
    if not fields or not _split(fields):
        return default
    groups = frozenset({always, *_split(fields)})
    if unknown := groups - known:
        raise BadParameter(
            "fields", f"unknown group(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(known))}"
        )
    return groups


def _trace_fields(fields: str | None) -> frozenset[str]:
    return _groups(fields, TRACE_FIELD_GROUPS, TRACE_FIELD_GROUPS, "core")


def _observation_groups(fields: str | None) -> frozenset[str]:
    return _groups(fields, OBSERVATION_FIELD_GROUPS, frozenset({"core", "basic"}), "core")


def _value_comparison(value: float | None, operator: str | None) -> ValueComparison | None:
    if value is None and operator is None:
        return None
    if value is None:
        raise BadParameter("value", "required with operator")
    if operator is None:
        raise BadParameter("operator", "required with value (one of <, >, <=, >=, !=, =)")
    if not math.isfinite(value):
        raise BadParameter("value", "must be a finite number")
    for known in ("<", ">", "<=", ">=", "!=", "="):
        if operator == known:
            return ValueComparison(operator=known, value=value)
    raise BadParameter("operator", "expected one of <, >, <=, >=, !=, =")


_FILTER_HELP = {
    "traces": describe(TRACE_COLUMNS),
    "observations": describe(OBSERVATION_COLUMNS),
    "scores": describe(SCORE_COLUMNS),
}


def _observation_query(
    name: str | None = None,
    type: ObservationType | None = None,  # noqa: A002 - Langfuse's parameter name
    trace_id: str | None = Query(None, alias="traceId"),
    level: ObservationLevel | None = None,
    parent_observation_id: str | None = Query(None, alias="parentObservationId"),
    environment: list[str] | None = Query(None),
    from_start_time: datetime | None = Query(None, alias="fromStartTime"),
    to_start_time: datetime | None = Query(None, alias="toStartTime"),
    version: str | None = None,
    user_id: str | None = Query(None, alias="userId", description="The trace's userId"),
    filter: str | None = Query(None, description=_FILTER_HELP["observations"]),  # noqa: A002 - Langfuse's name
) -> ObservationQuery:
    """The filters v1 and v2 observations share."""
    return ObservationQuery(
        name=name,
        type=type,
        trace_id=trace_id,
        user_id=user_id,
        level=level,
        parent_observation_id=parent_observation_id,
        version=version,
        environments=_split(environment),
        start_time=_time_range(from_start_time, to_start_time, ("fromStartTime", "toStartTime")),
        filters=parse_filter(filter, OBSERVATION_COLUMNS),
    )


def _score_query(
    name: str | None = None,
    source: ScoreSource | None = None,
    data_type: ScoreDataType | None = Query(None, alias="dataType"),
    trace_id: str | None = Query(None, alias="traceId"),
    session_id: str | None = Query(None, alias="sessionId"),
    observation_id: str | None = Query(None, alias="observationId"),
    config_id: str | None = Query(None, alias="configId"),
    queue_id: str | None = Query(None, alias="queueId"),
    dataset_run_id: str | None = Query(None, alias="datasetRunId"),
    score_ids: str | None = Query(None, alias="scoreIds"),
    user_id: str | None = Query(None, alias="userId"),
    trace_tags: list[str] | None = Query(None, alias="traceTags", description="The trace has all of these tags"),
    environment: list[str] | None = Query(None),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
    value: float | None = Query(None, description="Compared with `operator`; both or neither"),
    operator: str | None = Query(None, description="One of <, >, <=, >=, !=, ="),
    fields: str | None = Query(None, description="Comma-separated groups: score (always), trace (default both)"),
    filter: str | None = Query(None, description=_FILTER_HELP["scores"]),  # noqa: A002 - Langfuse's name
) -> ScoreQuery:
    """The filters v1 and v2 scores share."""
    groups = _groups(fields, SCORE_FIELD_GROUPS, SCORE_FIELD_GROUPS, "score")
    return ScoreQuery(
        name=name,
        source=source,
        data_type=data_type,
        trace_id=trace_id,
        session_id=session_id,
        config_id=config_id,
        queue_id=queue_id,
        dataset_run_id=dataset_run_id,
        score_ids=_split(score_ids),
        observation_ids=_split(observation_id),
        user_id=user_id,
        trace_tags=_split(trace_tags),
        environments=_split(environment),
        timestamp=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
        value=_value_comparison(value, operator),
        include_trace="trace" in groups,
        filters=parse_filter(filter, SCORE_COLUMNS),
    )


# --- traces -------------------------------------------------------------------------------------
@router.get("/api/public/traces", response_model=Traces, response_model_exclude_unset=True, responses=_LIST)
async def list_traces(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    page: int = 1,
    limit: int = 50,
    user_id: str | None = Query(None, alias="userId"),
    name: str | None = None,
    session_id: str | None = Query(None, alias="sessionId"),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
    order_by: str | None = Query(None, alias="orderBy"),
    tags: list[str] | None = Query(None),
    version: str | None = None,
    release: str | None = None,
    environment: list[str] | None = Query(None),
    fields: str | None = Query(None, description="Comma-separated groups: core, io, scores, observations, metrics"),
    filter: str | None = Query(None, description=_FILTER_HELP["traces"]),  # noqa: A002 - Langfuse's name
) -> Traces:
    paging = _page(page, limit)
    query = TraceQuery(
        user_id=user_id,
        name=name,
        session_id=session_id,
        version=version,
        release=release,
        tags=_split(tags),
        environments=_split(environment),
        timestamp=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
        order=_trace_order(order_by),
        fields=_trace_fields(fields),
        filters=parse_filter(filter, TRACE_COLUMNS),
    )
    return await service.list_traces(auth.project_id, query, paging)


@router.get(
    "/api/public/traces/{trace_id:path}",
    response_model=TraceWithFullDetails,
    response_model_exclude_unset=True,
    responses=_ONE,
)
async def get_trace(
    trace_id: str,
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    fields: str | None = Query(None, description="Comma-separated groups: core, io, scores, observations, metrics"),
) -> TraceWithFullDetails:
    trace = await service.get_trace(auth.project_id, trace_id, _trace_fields(fields))
    if trace is None:
        raise NotFound(f"Trace {trace_id} not found")
    return trace


@router.delete("/api/public/traces/{trace_id:path}", response_model=DeleteTraceResponse, responses=_ONE)
async def delete_trace(
    trace_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> DeleteTraceResponse:
    if not await service.delete_traces(auth.project_id, [trace_id]):
        raise NotFound(f"Trace {trace_id} not found")
    return DeleteTraceResponse(message="Trace deleted successfully")


@router.delete(
    "/api/public/traces",
    response_model=DeleteTraceResponse,
    responses={**_LIST, **error_responses(413)},
    max_body_size=MAX_JSON_BODY_BYTES,
)
async def delete_traces(
    body: DeleteTracesRequest,
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
) -> DeleteTraceResponse:
    await service.delete_traces(auth.project_id, body.trace_ids)
    return DeleteTraceResponse(message="Traces deleted successfully")


# --- observations -------------------------------------------------------------------------------
@router.get(
    "/api/public/observations", response_model=ObservationsViews, response_model_exclude_unset=True, responses=_LIST
)
async def list_observations(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    filters: ObservationQuery = Depends(_observation_query),
    page: int = 1,
    limit: int = 50,
) -> ObservationsViews:
    paging = _page(page, limit)
    return await service.list_observations(auth.project_id, filters, paging)


@router.get(
    "/api/public/observations/{observation_id:path}",
    response_model=Observation,
    response_model_exclude_unset=True,
    responses=_ONE,
)
async def get_observation(
    observation_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> Observation:
    observation = await service.get_observation(auth.project_id, observation_id)
    if observation is None:
        raise NotFound(f"Observation {observation_id} not found")
    return observation


@router.get(
    "/api/public/v2/observations",
    response_model=ObservationsV2Response,
    response_model_exclude_unset=True,
    responses=_LIST,
)
async def list_observations_v2(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    filters: ObservationQuery = Depends(_observation_query),
    fields: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    is_root_observation: bool | None = Query(None, alias="isRootObservation"),
    session_id: str | None = Query(None, alias="sessionId", description="The trace's sessionId"),
    parse_io_as_json: bool | None = Query(
        None, alias="parseIoAsJson", description="Deprecated by Langfuse: true is a 400; input/output are raw strings"
    ),
    expand_metadata: str | None = Query(  # accepted, and already satisfied: see its description
        None,
        alias="expandMetadata",
        description="Comma-separated metadata keys to return untruncated (or true / *). tracehouse never "
        "truncates metadata values, so every key is always returned in full.",
    ),
) -> ObservationsV2Response:
    paging = _cursor_page(limit, cursor)
    groups = _observation_groups(fields)
    if parse_io_as_json:
        raise BadParameter("parseIoAsJson", "deprecated: input and output are always returned as raw strings")
    query = dataclasses.replace(filters, is_root=is_root_observation, session_id=session_id)
    return await service.list_observations_v2(auth.project_id, query, paging, groups)


# --- scores -------------------------------------------------------------------------------------
@router.get("/api/public/scores", response_model=GetScoresResponse, response_model_exclude_unset=True, responses=_LIST)
async def list_scores_v1(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    filters: ScoreQuery = Depends(_score_query),
    page: int = 1,
    limit: int = 50,
) -> GetScoresResponse:
    paging = _page(page, limit)
    return await service.list_scores(auth.project_id, dataclasses.replace(filters, trace_only=True), paging)


@router.get(
    "/api/public/v2/scores", response_model=GetScoresResponse, response_model_exclude_unset=True, responses=_LIST
)
async def list_scores_v2(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    filters: ScoreQuery = Depends(_score_query),
    page: int = 1,
    limit: int = 50,
) -> GetScoresResponse:
    paging = _page(page, limit)
    return await service.list_scores(auth.project_id, filters, paging)


@router.get(
    "/api/public/v3/scores", response_model=GetScoresV3Response, response_model_exclude_unset=True, responses=_LIST
)
async def list_scores_v3(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    limit: int = Query(50, description="1 to 100"),
    cursor: str | None = None,
    fields: str | None = Query(
        None, description="Comma-separated groups beyond core: details, subject, annotation (default: all)"
    ),
    id: str | None = None,  # noqa: A002 - Langfuse's parameter name
    name: str | None = None,
    source: str | None = Query(None, description=f"Comma-separated, any of {names(ScoreSource)} (any case)"),
    data_type: str | None = Query(
        None, alias="dataType", description=f"Comma-separated, any of {names(ScoreDataType)} (any case)"
    ),
    environment: str | None = None,
    config_id: str | None = Query(None, alias="configId"),
    queue_id: str | None = Query(None, alias="queueId"),
    author_user_id: str | None = Query(None, alias="authorUserId"),
    value: str | None = Query(
        None, description="Comma-separated exact values; needs one dataType of NUMERIC, BOOLEAN or CATEGORICAL"
    ),
    value_min: float | None = Query(None, alias="valueMin", description="Inclusive; needs dataType=NUMERIC"),
    value_max: float | None = Query(None, alias="valueMax", description="Inclusive; needs dataType=NUMERIC"),
    trace_id: str | None = Query(None, alias="traceId"),
    session_id: str | None = Query(None, alias="sessionId"),
    observation_id: str | None = Query(None, alias="observationId", description="Needs traceId"),
    experiment_id: str | None = Query(None, alias="experimentId", description="Dataset run ids"),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
    user_id: str | None = Query(None, alias="userId", description="Not in v3 (400): use /api/public/v2/scores"),
    trace_tags: str | None = Query(None, alias="traceTags", description="Not in v3 (400): use /api/public/v2/scores"),
    filter: str | None = Query(None, description=_FILTER_HELP["scores"]),  # noqa: A002 - Langfuse's name
) -> GetScoresV3Response:
    paging = _cursor_page(limit, cursor, max_limit=100)
    groups = _groups(fields, SCORE_V3_FIELD_GROUPS, SCORE_V3_FIELD_GROUPS, "core")
    for parameter, given in (("userId", user_id), ("traceTags", trace_tags)):
        if given:  # as Langfuse: these need the trace
            raise BadParameter(parameter, "needs a trace join and is not supported in v3; use /api/public/v2/scores")
    data_types = _one_of(ScoreDataType, "dataType", tuple(v.upper() for v in _split(data_type)))
    query = ScoreV3Query(
        ids=_split(id),
        names=_split(name),
        sources=_one_of(ScoreSource, "source", tuple(v.upper() for v in _split(source))),
        data_types=data_types,
        environments=_split(environment),
        config_ids=_split(config_id),
        queue_ids=_split(queue_id),
        author_user_ids=_split(author_user_id),
        trace_ids=_split(trace_id),
        session_ids=_split(session_id),
        observation_ids=_split(observation_id),
        dataset_run_ids=_split(experiment_id),
        values=_score_values(value, data_types),
        value_min=_bound("valueMin", value_min, data_types),
        value_max=_bound("valueMax", value_max, data_types),
        timestamp=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
        filters=parse_filter(filter, SCORE_COLUMNS),
    )
    _check_subjects(query)
    return await service.list_scores_v3(auth.project_id, query, paging, groups)


def _score_values(text: str | None, data_types: tuple[ScoreDataType, ...]) -> ScoreValues | None:
    """v3's `value`: one data type decides how the values read (as Langfuse)."""
    values = _split(text)
    if not values:
        return None
    if len(data_types) != 1 or data_types[0] not in (
        ScoreDataType.NUMERIC,
        ScoreDataType.BOOLEAN,
        ScoreDataType.CATEGORICAL,
    ):
        raise BadParameter("value", "needs exactly one dataType: NUMERIC, BOOLEAN or CATEGORICAL")
    if data_types[0] == ScoreDataType.CATEGORICAL:
        return ScoreValues(labels=values)
    if data_types[0] == ScoreDataType.BOOLEAN:
        if any(v not in ("true", "false") for v in values):
            raise BadParameter("value", "BOOLEAN values are true or false")
        return ScoreValues(numbers=tuple(1.0 if v == "true" else 0.0 for v in values))
    try:
        numbers = tuple(float(v) for v in values)
    except ValueError:
        raise BadParameter("value", "NUMERIC values are finite numbers") from None
    if not all(math.isfinite(n) for n in numbers):
        raise BadParameter("value", "NUMERIC values are finite numbers")
    return ScoreValues(numbers=numbers)


def _bound(parameter: str, bound: float | None, data_types: tuple[ScoreDataType, ...]) -> float | None:
    if bound is None:
        return None
    if data_types != (ScoreDataType.NUMERIC,):
        raise BadParameter(parameter, "needs dataType=NUMERIC (as the only data type)")
    if not math.isfinite(bound):
        raise BadParameter(parameter, "must be a finite number")
    return bound


def _check_subjects(query: ScoreV3Query) -> None:
    """As Langfuse: observation ids are scoped to a trace; a score has one kind of subject."""
    if query.observation_ids and not query.trace_ids:
        raise BadParameter("observationId", "needs traceId (observation ids are scoped to a trace)")
    given = [
        name
        for name, ids in (
            ("traceId", query.trace_ids),
            ("sessionId", query.session_ids),
            ("experimentId", query.dataset_run_ids),
        )
        if ids
    ]
    if len(given) > 1:
        raise BadParameter(given[1], "at most one of traceId, sessionId, experimentId")


@router.get(
    "/api/public/scores/{score_id:path}", response_model=Score, response_model_exclude_unset=True, responses=_ONE
)
async def get_score_v1(
    score_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> Score:
    """A trace score by id (v1: scores on sessions or dataset runs, and corrections, are not found)."""
    score = await service.get_trace_score(auth.project_id, score_id)
    if score is None:
        raise NotFound(f"Score {score_id} not found")
    return score


@router.get(
    "/api/public/v2/scores/{score_id:path}",
    response_model=ScoreWithTrace,
    response_model_exclude_unset=True,
    responses=_ONE,
)
async def get_score_v2(
    score_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> ScoreWithTrace:
    """Any score by id, with its trace's attributes (null when it is not on a stored trace)."""
    score = await service.get_score_with_trace(auth.project_id, score_id)
    if score is None:
        raise NotFound(f"Score {score_id} not found")
    return score


@router.delete("/api/public/scores/{score_id:path}", response_model=DeleteScoreResponse, responses=_ONE)
async def delete_score(
    score_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> DeleteScoreResponse:
    """Any score (trace, observation, session or dataset run). The delete is a tombstone version, so
    exports see it."""
    if not await service.delete_score(auth.project_id, score_id):
        raise NotFound(f"Score {score_id} not found")
    return DeleteScoreResponse(message="Score deleted successfully")


# --- sessions and projects ----------------------------------------------------------------------
@router.get(
    "/api/public/sessions", response_model=PaginatedSessions, response_model_exclude_unset=True, responses=_LIST
)
async def list_sessions(
    auth: ProjectAuth = Depends(require_project),
    service: ReadService = Depends(read_service),
    page: int = 1,
    limit: int = 50,
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
    environment: list[str] | None = Query(None),
) -> PaginatedSessions:
    paging = _page(page, limit)
    query = SessionQuery(
        environments=_split(environment),
        created_at=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
    )
    return await service.list_sessions(auth.project_id, query, paging)


@router.get(
    "/api/public/sessions/{session_id:path}",
    response_model=SessionWithTraces,
    response_model_exclude_unset=True,
    responses=_ONE,
)
async def get_session(
    session_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> SessionWithTraces:
    session = await service.get_session(auth.project_id, session_id)
    if session is None:
        raise NotFound(f"Session {session_id} not found")
    return session


@router.get("/api/public/projects", response_model=Projects, responses=error_responses(401, 404, 503))
async def projects(
    auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> Projects:
    """The project the key belongs to (the SDKs call this to learn it)."""
    found = await service.projects(auth.project_id)
    if found is None:
        raise NotFound(f"Project {auth.project_id} not found")
    return found
