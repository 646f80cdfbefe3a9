"""Langfuse's public read API (paths, parameters, JSON field names, page `meta`).

Each route parses its parameters into a query object, asks the `ReadService` and returns its model;
the SQL lives in `queries/sql.py`. Responses are serialized with `exclude_unset` (see models.py).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from fastapi import APIRouter, Depends, Query

from tracehouse.api_common import MAX_JSON_BODY_BYTES, BadParameter, NotFound, error_responses, get_services
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.enums import ObservationLevel, ObservationType, ScoreDataType, ScoreSource, names
from tracehouse.queries.models import (
    OBSERVATION_FIELD_GROUPS,
    TRACE_FIELD_GROUPS,
    TRACE_ORDER_FIELDS,
    Cursor,
    CursorPage,
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
    ScoreQuery,
    ScoreV3Query,
    SessionQuery,
    SessionWithTraces,
    TimeRange,
    TraceOrder,
    TraceQuery,
    Traces,
    TraceWithFullDetails,
)
from tracehouse.queries.service import ReadService
from tracehouse.runtime import Services

router = APIRouter(tags=["read"])
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


def _cursor_page(limit: int, cursor: str | None) -> CursorPage:
    if not 1 <= limit <= 1000:
        raise BadParameter("limit", "must be between 1 and 1000")
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
    if not 1900 <= value.astimezone(UTC).year <= 2299:
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


def _trace_fields(fields: str | None) -> frozenset[str]:
    """Unknown groups are ignored and core is always included (as Langfuse)."""
    if not fields:
        return TRACE_FIELD_GROUPS
    return (frozenset(_split(fields)) & TRACE_FIELD_GROUPS) | {"core"}


def _observation_groups(fields: str | None) -> frozenset[str]:
    groups = frozenset({"core", *_split(fields)}) if fields else frozenset({"core", "basic"})
    if unknown := groups - OBSERVATION_FIELD_GROUPS:
        raise BadParameter("fields", f"unknown group(s) {', '.join(sorted(unknown))}")
    return groups


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
) -> ObservationQuery:
    """The filters v1 and v2 observations share."""
    return ObservationQuery(
        name=name,
        type=type,
        trace_id=trace_id,
        level=level,
        parent_observation_id=parent_observation_id,
        version=version,
        environments=_split(environment),
        start_time=_time_range(from_start_time, to_start_time, ("fromStartTime", "toStartTime")),
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
    environment: list[str] | None = Query(None),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
) -> ScoreQuery:
    """The filters v1 and v2 scores share."""
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
        environments=_split(environment),
        timestamp=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
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
    fields: str | None = None,
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
    )
    return await service.list_traces(auth.project_id, query, paging)


@router.get(
    "/api/public/traces/{trace_id:path}",
    response_model=TraceWithFullDetails,
    response_model_exclude_unset=True,
    responses=_ONE,
)
async def get_trace(
    trace_id: str, auth: ProjectAuth = Depends(require_project), service: ReadService = Depends(read_service)
) -> TraceWithFullDetails:
    trace = await service.get_trace(auth.project_id, trace_id)
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
    user_id: str | None = Query(None, alias="userId"),
) -> ObservationsViews:
    paging = _page(page, limit)
    return await service.list_observations(auth.project_id, dataclasses.replace(filters, user_id=user_id), paging)


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
) -> ObservationsV2Response:
    paging = _cursor_page(limit, cursor)
    groups = _observation_groups(fields)
    query = dataclasses.replace(filters, is_root=is_root_observation)
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
    limit: int = 50,
    cursor: str | None = None,
    id: str | None = None,  # noqa: A002 - Langfuse's parameter name
    name: str | None = None,
    source: str | None = Query(None, description=f"Comma-separated, any of {names(ScoreSource)}"),
    data_type: str | None = Query(
        None, alias="dataType", description=f"Comma-separated, any of {names(ScoreDataType)}"
    ),
    environment: str | None = None,
    trace_id: str | None = Query(None, alias="traceId"),
    session_id: str | None = Query(None, alias="sessionId"),
    observation_id: str | None = Query(None, alias="observationId"),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
) -> GetScoresV3Response:
    paging = _cursor_page(limit, cursor)
    query = ScoreV3Query(
        ids=_split(id),
        names=_split(name),
        sources=_one_of(ScoreSource, "source", _split(source)),
        data_types=_one_of(ScoreDataType, "dataType", _split(data_type)),
        environments=_split(environment),
        trace_ids=_split(trace_id),
        session_ids=_split(session_id),
        observation_ids=_split(observation_id),
        timestamp=_time_range(from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp")),
    )
    return await service.list_scores_v3(auth.project_id, query, paging)


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
