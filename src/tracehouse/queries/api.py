"""Langfuse's public read API (paths, parameters, JSON field names, page `meta`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tracehouse.api_common import BadParameter, NotFound
from tracehouse.auth import ProjectAuth, require_project
from tracehouse.metadata import get_project
from tracehouse.queries.service import (
    OBSERVATION_GROUPS,
    TRACE_FIELDS,
    TRACE_ORDER_COLUMNS,
    Filter,
    ReadService,
    cursor_page,
    meta,
    observation_v2_view,
    paging,
    score_v3_view,
    split_list,
)
from tracehouse.timefmt import ch_time

router = APIRouter(tags=["read"])
OBSERVATION_TYPES = {
    "GENERATION",
    "SPAN",
    "EVENT",
    "AGENT",
    "TOOL",
    "CHAIN",
    "RETRIEVER",
    "EVALUATOR",
    "EMBEDDING",
    "GUARDRAIL",
}
LEVELS = {"DEBUG", "DEFAULT", "WARNING", "ERROR"}


def _service(request: Request) -> ReadService:
    return ReadService(request.app.state.services.clickhouse)


def not_found(what: str) -> JSONResponse:
    return JSONResponse(NotFound(f"{what} not found").body(), status_code=404)


def _time_range(
    where: Filter, column: str, start: datetime | None, end: datetime | None, names: tuple[str, str]
) -> None:
    for value, name in ((start, names[0]), (end, names[1])):
        if value is not None and value.tzinfo is None:
            raise BadParameter(name, "must include a time zone offset (Z or +hh:mm)")
        # ClickHouse's DateTime64 covers 1900-2299.
        if value is not None and not 1900 <= value.astimezone(UTC).year <= 2299:
            raise BadParameter(name, "must be between 1900-01-01 and 2299-12-31")
    if start is not None:
        where.add(f"{column} >= {{from_ts:DateTime64(3)}}", from_ts=ch_time(start))
    if end is not None:
        where.add(f"{column} < {{to_ts:DateTime64(3)}}", to_ts=ch_time(end))


def _trace_filter(
    user_id: str | None,
    name: str | None,
    session_id: str | None,
    version: str | None,
    release: str | None,
    tags: list[str] | None,
    environment: list[str] | None,
    from_ts: datetime | None,
    to_ts: datetime | None,
) -> Filter:
    where = Filter()
    for column, value, key in (
        ("user_id", user_id, "user_id"),
        ("name", name, "name"),
        ("session_id", session_id, "session_id"),
        ("version", version, "version"),
        ("release", release, "release"),
    ):
        if value is not None:
            where.add(f"{column} = {{{key}:String}}", **{key: value})
    if tags_list := split_list(tags):
        where.add("hasAll(tags, {tags:Array(String)})", tags=tags_list)
    if envs := split_list(environment):
        where.add("environment IN {envs:Array(String)}", envs=envs)
    _time_range(where, "timestamp", from_ts, to_ts, ("fromTimestamp", "toTimestamp"))
    return where


def _order(order_by: str | None) -> str:
    if not order_by:
        return "timestamp DESC, id"
    column, _, direction = order_by.partition(".")
    if column not in TRACE_ORDER_COLUMNS or direction.lower() not in ("asc", "desc"):
        raise BadParameter(
            "orderBy", f"expected <column>.<asc|desc> with column one of {', '.join(TRACE_ORDER_COLUMNS)}"
        )
    return f"{TRACE_ORDER_COLUMNS[column]} {direction.upper()}, id"


@router.get("/api/public/traces")
async def list_traces(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
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
) -> JSONResponse:
    paging(page, limit)
    where = _trace_filter(user_id, name, session_id, version, release, tags, environment, from_timestamp, to_timestamp)
    wanted = (set(split_list([fields])) & TRACE_FIELDS) | {"core"} if fields else set(TRACE_FIELDS)
    data, total = await _service(request).list_traces(auth.project_id, where, _order(order_by), page, limit, wanted)
    return JSONResponse({"data": data, "meta": meta(page, limit, total)})


@router.get("/api/public/traces/{trace_id}")
async def get_trace(trace_id: str, request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    trace = await _service(request).get_trace(auth.project_id, trace_id)
    return JSONResponse(trace) if trace else not_found(f"Trace {trace_id}")


class DeleteTraces(BaseModel):
    traceIds: list[str] = Field(min_length=1, max_length=1000)  # noqa: N815 - Langfuse's field name


@router.delete("/api/public/traces/{trace_id}")
async def delete_trace(trace_id: str, request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    found = await _service(request).delete_traces(auth.project_id, [trace_id])
    if not found:
        return not_found(f"Trace {trace_id}")
    return JSONResponse({"message": "Trace deleted successfully"})


@router.delete("/api/public/traces")
async def delete_traces(
    body: DeleteTraces, request: Request, auth: ProjectAuth = Depends(require_project)
) -> JSONResponse:
    await _service(request).delete_traces(auth.project_id, body.traceIds)
    return JSONResponse({"message": "Traces deleted successfully"})


@router.get("/api/public/observations")
async def list_observations(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
    page: int = 1,
    limit: int = 50,
    name: str | None = None,
    user_id: str | None = Query(None, alias="userId"),
    type: str | None = None,  # noqa: A002 - Langfuse's parameter name
    trace_id: str | None = Query(None, alias="traceId"),
    level: str | None = None,
    parent_observation_id: str | None = Query(None, alias="parentObservationId"),
    environment: list[str] | None = Query(None),
    from_start_time: datetime | None = Query(None, alias="fromStartTime"),
    to_start_time: datetime | None = Query(None, alias="toStartTime"),
    version: str | None = None,
) -> JSONResponse:
    paging(page, limit)
    where = Filter()
    if type is not None and type not in OBSERVATION_TYPES:
        raise BadParameter("type", f"expected one of {', '.join(sorted(OBSERVATION_TYPES))}")
    if level is not None and level not in LEVELS:
        raise BadParameter("level", f"expected one of {', '.join(sorted(LEVELS))}")
    for column, value, key in (
        ("name", name, "name"),
        ("type", type, "type"),
        ("trace_id", trace_id, "trace"),
        ("level", level, "level"),
        ("version", version, "version"),
        ("parent_observation_id", parent_observation_id, "parent"),
        ("t.user_id", user_id, "user"),
    ):
        if value is not None:
            where.add(f"{column} = {{{key}:String}}", **{key: value})
    if envs := split_list(environment):
        where.add("environment IN {envs:Array(String)}", envs=envs)
    _time_range(where, "start_time", from_start_time, to_start_time, ("fromStartTime", "toStartTime"))
    data, total = await _service(request).list_observations(
        auth.project_id, where, page, limit, join_traces=user_id is not None, trace_id=trace_id
    )
    return JSONResponse({"data": data, "meta": meta(page, limit, total)})


@router.get("/api/public/observations/{observation_id}")
async def get_observation(
    observation_id: str, request: Request, auth: ProjectAuth = Depends(require_project)
) -> JSONResponse:
    observation = await _service(request).get_observation(auth.project_id, observation_id)
    return JSONResponse(observation) if observation else not_found(f"Observation {observation_id}")


async def _scores(
    request: Request, auth: ProjectAuth, params: dict[str, Any], *, with_trace: bool, trace_only: bool
) -> JSONResponse:
    page, limit = params.pop("page"), params.pop("limit")
    paging(page, limit)
    where = Filter()
    if trace_only:
        where.add("trace_id IS NOT NULL")
    for column, key in (
        ("name", "name"),
        ("source", "source"),
        ("data_type", "dataType"),
        ("trace_id", "traceId"),
        ("session_id", "sessionId"),
        ("config_id", "configId"),
        ("queue_id", "queueId"),
        ("dataset_run_id", "datasetRunId"),
    ):
        if params.get(key) is not None:
            where.add(f"{column} = {{{key}:String}}", **{key: params[key]})
    if ids := split_list([params["scoreIds"]] if params.get("scoreIds") else None):
        where.add("id IN {score_ids:Array(String)}", score_ids=ids)
    if obs := split_list([params["observationId"]] if params.get("observationId") else None):
        where.add("observation_id IN {obs_ids:Array(String)}", obs_ids=obs)
    if envs := split_list(params.get("environment")):
        where.add("environment IN {envs:Array(String)}", envs=envs)
    if params.get("userId") is not None:
        where.add("t.t_user_id = {user:String}", user=params["userId"])
    _time_range(
        where, "timestamp", params.get("fromTimestamp"), params.get("toTimestamp"), ("fromTimestamp", "toTimestamp")
    )
    data, total = await _service(request).list_scores(
        auth.project_id, where, page, limit, with_trace=with_trace or params.get("userId") is not None
    )
    return JSONResponse({"data": data, "meta": meta(page, limit, total)})


def _score_params(
    page: int = 1,
    limit: int = 50,
    name: str | None = None,
    source: str | None = None,
    data_type: str | None = Query(None, alias="dataType"),
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
) -> dict[str, Any]:
    return {
        "page": page,
        "limit": limit,
        "name": name,
        "source": source,
        "dataType": data_type,
        "traceId": trace_id,
        "sessionId": session_id,
        "observationId": observation_id,
        "configId": config_id,
        "queueId": queue_id,
        "datasetRunId": dataset_run_id,
        "scoreIds": score_ids,
        "userId": user_id,
        "environment": environment,
        "fromTimestamp": from_timestamp,
        "toTimestamp": to_timestamp,
    }


@router.get("/api/public/scores")
async def list_scores_v1(
    request: Request, auth: ProjectAuth = Depends(require_project), params: dict[str, Any] = Depends(_score_params)
) -> JSONResponse:
    return await _scores(request, auth, params, with_trace=False, trace_only=True)


@router.get("/api/public/v2/scores")
async def list_scores_v2(
    request: Request, auth: ProjectAuth = Depends(require_project), params: dict[str, Any] = Depends(_score_params)
) -> JSONResponse:
    return await _scores(request, auth, params, with_trace=True, trace_only=False)


@router.get("/api/public/sessions")
async def list_sessions(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
    page: int = 1,
    limit: int = 50,
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
    environment: list[str] | None = Query(None),
) -> JSONResponse:
    paging(page, limit)
    where = Filter()
    _time_range(where, "created_at", from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp"))
    data, total = await _service(request).list_sessions(auth.project_id, where, page, limit, split_list(environment))
    return JSONResponse({"data": data, "meta": meta(page, limit, total)})


@router.get("/api/public/sessions/{session_id}")
async def get_session(session_id: str, request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    session = await _service(request).get_session(auth.project_id, session_id)
    return JSONResponse(session) if session else not_found(f"Session {session_id}")


@router.get("/api/public/projects")
async def projects(request: Request, auth: ProjectAuth = Depends(require_project)) -> JSONResponse:
    """The project the key belongs to (the SDKs call this to learn it)."""
    project = await asyncio.to_thread(get_project, request.app.state.services.metadata, auth.project_id)
    if project is None:
        return not_found(f"Project {auth.project_id}")
    return JSONResponse(
        {
            "data": [
                {
                    "id": project.id,
                    "name": project.name,
                    "metadata": {},
                    "organization": {"id": "default", "name": "default"},
                    "retentionDays": project.retention_days,
                }
            ]
        }
    )


@router.get("/api/public/v2/observations")
async def list_observations_v2(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
    fields: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    name: str | None = None,
    type: str | None = None,  # noqa: A002 - Langfuse's parameter name
    trace_id: str | None = Query(None, alias="traceId"),
    level: str | None = None,
    parent_observation_id: str | None = Query(None, alias="parentObservationId"),
    is_root_observation: bool | None = Query(None, alias="isRootObservation"),
    environment: list[str] | None = Query(None),
    from_start_time: datetime | None = Query(None, alias="fromStartTime"),
    to_start_time: datetime | None = Query(None, alias="toStartTime"),
    version: str | None = None,
) -> JSONResponse:
    if not 1 <= limit <= 1000:
        raise BadParameter("limit", "must be between 1 and 1000")
    groups = {"core", *split_list([fields])} if fields else {"core", "basic"}
    if unknown := groups - OBSERVATION_GROUPS:
        raise BadParameter("fields", f"unknown group(s) {', '.join(sorted(unknown))}")
    where = Filter()
    if type is not None and type not in OBSERVATION_TYPES:
        raise BadParameter("type", f"expected one of {', '.join(sorted(OBSERVATION_TYPES))}")
    for column, value, key in (
        ("name", name, "name"),
        ("type", type, "type"),
        ("trace_id", trace_id, "trace"),
        ("level", level, "level"),
        ("version", version, "version"),
        ("parent_observation_id", parent_observation_id, "parent"),
    ):
        if value is not None:
            where.add(f"{column} = {{{key}:String}}", **{key: value})
    if is_root_observation is not None:
        where.add("parent_observation_id IS NULL" if is_root_observation else "parent_observation_id IS NOT NULL")
    if envs := split_list(environment):
        where.add("environment IN {envs:Array(String)}", envs=envs)
    _time_range(where, "start_time", from_start_time, to_start_time, ("fromStartTime", "toStartTime"))
    rows, next_cursor = await cursor_page(
        _service(request), "observations", "start_time", auth.project_id, where, limit, cursor
    )
    body: dict[str, Any] = {"data": [observation_v2_view(r, groups) for r in rows], "meta": {}}
    if next_cursor:
        body["meta"]["cursor"] = next_cursor
    return JSONResponse(body)


@router.get("/api/public/v3/scores")
async def list_scores_v3(
    request: Request,
    auth: ProjectAuth = Depends(require_project),
    limit: int = 50,
    cursor: str | None = None,
    id: str | None = None,  # noqa: A002 - Langfuse's parameter name
    name: str | None = None,
    source: str | None = None,
    data_type: str | None = Query(None, alias="dataType"),
    environment: str | None = None,
    trace_id: str | None = Query(None, alias="traceId"),
    session_id: str | None = Query(None, alias="sessionId"),
    observation_id: str | None = Query(None, alias="observationId"),
    from_timestamp: datetime | None = Query(None, alias="fromTimestamp"),
    to_timestamp: datetime | None = Query(None, alias="toTimestamp"),
) -> JSONResponse:
    if not 1 <= limit <= 1000:
        raise BadParameter("limit", "must be between 1 and 1000")
    where = Filter()
    for column, value, key in (
        ("id", id, "id"),
        ("name", name, "name"),
        ("source", source, "source"),
        ("data_type", data_type, "kind"),
        ("environment", environment, "env"),
        ("trace_id", trace_id, "trace"),
        ("session_id", session_id, "session"),
        ("observation_id", observation_id, "obs"),
    ):
        if values := split_list([value] if value else None):
            where.add(f"{column} IN {{{key}:Array(String)}}", **{key: values})
    _time_range(where, "timestamp", from_timestamp, to_timestamp, ("fromTimestamp", "toTimestamp"))
    rows, next_cursor = await cursor_page(
        _service(request), "scores", "timestamp", auth.project_id, where, limit, cursor
    )
    meta_body: dict[str, Any] = {"limit": limit}
    if next_cursor:
        meta_body["cursor"] = next_cursor
    return JSONResponse({"data": [score_v3_view(r) for r in rows], "meta": meta_body})
