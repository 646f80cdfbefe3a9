"""Read queries for the public API: every query runs in the interactive workload class.

Reads see the latest version of each row (`FINAL`, which also drops `is_deleted` rows) and always
filter by the caller's project. Deletes write tombstones (the row again with `is_deleted = 1` and a
new `event_ts`), so readers stop seeing the entity at once and exports see the deletion as a
newer version instead of missing it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tracehouse.api_common import BadParameter
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.timefmt import api_time, ch_time

TRACE_ORDER_COLUMNS = {
    "id": "id",
    "timestamp": "timestamp",
    "name": "name",
    "userId": "user_id",
    "release": "release",
    "version": "version",
    "public": "public",
    "bookmarked": "bookmarked",
    "sessionId": "session_id",
}
TRACE_FIELDS = {"core", "io", "scores", "observations", "metrics"}
PAGE = "LIMIT {limit:UInt32} OFFSET {offset:UInt32}"


def parse_json(value: Any) -> Any:
    """Stored I/O and metadata values are JSON text when they were structured; give them back parsed."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, Decimal | int | float) else None


@dataclass
class Filter:
    """WHERE clauses and their parameters, built together so values are always bound."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **params: Any) -> None:
        self.clauses.append(clause)
        self.params.update(params)

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1"


def paging(page: int, limit: int, *, max_limit: int = 100) -> tuple[int, int]:
    if page < 1:
        raise BadParameter("page", "must be 1 or more")
    if not 1 <= limit <= max_limit:
        raise BadParameter("limit", f"must be between 1 and {max_limit}")
    return page, limit


def meta(page: int, limit: int, total: int) -> dict[str, int]:
    return {"page": page, "limit": limit, "totalItems": total, "totalPages": math.ceil(total / limit) if limit else 0}


def split_list(values: list[str] | None) -> list[str]:
    """Repeated query params or comma-separated values, as Langfuse accepts both."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


class ReadService:
    def __init__(self, clickhouse: ClickHouse) -> None:
        self._ch = clickhouse

    async def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        # Versions of a row never cross partitions (traces, observations and scores are partitioned by
        # their immutable time column), so FINAL may merge each partition on its own, in parallel.
        return await self._ch.query(
            sql, params, workload=Workload.INTERACTIVE, settings={"do_not_merge_across_partitions_select_final": 1}
        )

    # --- traces ----------------------------------------------------------------------------
    async def list_traces(
        self, project_id: str, where: Filter, order: str, page: int, limit: int, fields: set[str]
    ) -> tuple[list[dict[str, Any]], int]:
        params = {"p": project_id, **where.params, "limit": limit, "offset": (page - 1) * limit}
        base = f"FROM traces FINAL WHERE project_id = {{p:String}} AND {where.sql}"
        # Two steps: pick the page's ids reading only the columns the filter and order need, then fetch
        # those rows in full by id (input/output are most of the bytes and only 50 rows need them).
        page_ids, counted = await asyncio.gather(
            self.query(f"SELECT id {base} ORDER BY {order} {PAGE}", params),
            self.query(f"SELECT count() AS n {base}", params),
        )
        ids = [r["id"] for r in page_ids]
        fetched = (
            {
                r["id"]: r
                for r in await self.latest("traces", "id IN {ids:Array(String)}", {"p": project_id, "ids": ids})
            }
            if ids
            else {}
        )
        rows = [fetched[i] for i in ids if i in fetched]
        total = counted[0]["n"]
        details = await self._trace_details(project_id, [r["id"] for r in rows], fields)
        return [self.trace_view(r, details.get(r["id"], {}), fields) for r in rows], int(total)

    async def latest(self, table: str, where: str, params: dict[str, Any], order: str = "") -> list[dict[str, Any]]:
        return await self.query(f"SELECT * FROM ({_newest(table, where)}) {order}", params)

    async def get_trace(self, project_id: str, trace_id: str) -> dict[str, Any] | None:
        params = {"p": project_id, "id": trace_id}
        rows, observations, scores = await asyncio.gather(
            self.latest("traces", "id = {id:String}", params),
            self.latest("observations", "trace_id = {id:String}", params, "ORDER BY start_time"),
            self.latest("scores", "trace_id = {id:String}", params, "ORDER BY timestamp"),
        )
        if not rows:
            return None
        view = self.trace_view(rows[0], _metrics(observations), TRACE_FIELDS)
        view["observations"] = [observation_view(o) for o in observations]
        view["scores"] = [score_view(s) for s in scores]
        return view

    async def _trace_details(self, project_id: str, ids: list[str], fields: set[str]) -> dict[str, dict]:
        if not ids or not fields & {"observations", "metrics", "scores"}:
            return {}
        details: dict[str, dict[str, Any]] = {i: {} for i in ids}
        params = {"p": project_id, "ids": ids}
        if fields & {"observations", "metrics"}:
            for row in await self.query(
                "SELECT trace_id, groupArray(id) AS ids, min(start_time) AS first, "
                "max(greatest(start_time, coalesce(end_time, start_time))) AS last, sum(total_cost) AS cost "
                f"FROM ({_newest('observations', 'trace_id IN {ids:Array(String)}')}) GROUP BY trace_id",
                params,
            ):
                details[row["trace_id"]].update(
                    observations=row["ids"],
                    latency=(row["last"] - row["first"]).total_seconds(),
                    totalCost=_number(row["cost"]) or 0.0,
                )
        if "scores" in fields:
            for row in await self.query(
                f"SELECT trace_id, groupArray(id) AS ids FROM ({_newest('scores', 'trace_id IN {ids:Array(String)}')}) "
                "GROUP BY trace_id",
                params,
            ):
                details[row["trace_id"]]["scores"] = row["ids"]
        return details

    @staticmethod
    def trace_view(row: dict[str, Any], details: dict[str, Any], fields: set[str]) -> dict[str, Any]:
        io = "io" in fields
        metrics = "metrics" in fields
        return {
            "id": row["id"],
            "externalId": None,
            "timestamp": api_time(row["timestamp"]),
            "name": row["name"] or None,
            "userId": row["user_id"],
            "release": row["release"],
            "version": row["version"],
            "projectId": row["project_id"],
            "environment": row["environment"],
            "public": bool(row["public"]),
            "bookmarked": bool(row["bookmarked"]),
            "tags": list(row["tags"]),
            "sessionId": row["session_id"],
            "metadata": {k: parse_json(v) for k, v in row["metadata"]} if io else None,
            "input": parse_json(row["input"]) if io else None,
            "output": parse_json(row["output"]) if io else None,
            "createdAt": api_time(row["created_at"]),
            "updatedAt": api_time(row["updated_at"]),
            "observations": details.get("observations", []) if "observations" in fields else [],
            "scores": details.get("scores", []) if "scores" in fields else [],
            "latency": details.get("latency", 0.0) if metrics else -1,
            "totalCost": details.get("totalCost", 0.0) if metrics else -1,
            "htmlPath": f"/project/{row['project_id']}/traces/{row['id']}",
        }

    # --- observations ---------------------------------------------------------------------
    async def list_observations(
        self, project_id: str, where: Filter, page: int, limit: int, join_traces: bool, trace_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        params = {"p": project_id, **where.params, "limit": limit, "offset": (page - 1) * limit}
        source = "observations FINAL"
        if trace_id is not None:
            # One trace: take its rows' newest versions through the trace_id index (trace_id never
            # changes, so this is exact), then apply the other filters to those versions.
            params["only_trace"] = trace_id
            source = f"({_newest('observations', 'trace_id = {only_trace:String}')}) AS observations"
        if join_traces:  # userId lives on the trace
            source += (
                " INNER JOIN (SELECT id AS t_id, user_id FROM traces FINAL "
                "WHERE project_id = {p:String}) AS t ON t.t_id = observations.trace_id"
            )
        base = f"FROM {source} WHERE project_id = {{p:String}} AND {where.sql}"
        rows = await self.query(f"SELECT observations.* {base} ORDER BY start_time DESC, id {PAGE}", params)
        total = (await self.query(f"SELECT count() AS n {base}", params))[0]["n"]
        return [observation_view(r) for r in rows], int(total)

    async def get_observation(self, project_id: str, observation_id: str) -> dict[str, Any] | None:
        rows = await self.latest("observations", "id = {id:String}", {"p": project_id, "id": observation_id})
        return observation_view(rows[0]) if rows else None

    # --- scores -----------------------------------------------------------------------------
    async def list_scores(
        self, project_id: str, where: Filter, page: int, limit: int, with_trace: bool
    ) -> tuple[list[dict[str, Any]], int]:
        params = {"p": project_id, **where.params, "limit": limit, "offset": (page - 1) * limit}
        source = "scores FINAL"
        extra = ""
        if with_trace:
            source = (
                "scores FINAL LEFT JOIN (SELECT id AS t_id, user_id AS t_user_id, tags AS t_tags, "
                "environment AS t_environment, session_id AS t_session_id FROM traces FINAL "
                "WHERE project_id = {p:String}) AS t ON t.t_id = scores.trace_id"
            )
            extra = ", t.t_user_id, t.t_tags, t.t_environment, t.t_session_id, t.t_id"
        # CORRECTION scores are not listed (as Langfuse).
        base = f"FROM {source} WHERE project_id = {{p:String}} AND data_type != 'CORRECTION' AND {where.sql}"
        rows = await self.query(f"SELECT scores.*{extra} {base} ORDER BY timestamp DESC, id {PAGE}", params)
        total = (await self.query(f"SELECT count() AS n {base}", params))[0]["n"]
        views = []
        for row in rows:
            view = score_view(row)
            if with_trace:
                view["trace"] = (
                    {
                        "userId": row["t_user_id"],
                        "tags": list(row["t_tags"] or []),
                        "environment": row["t_environment"],
                        "sessionId": row["t_session_id"],
                    }
                    if row.get("t_id")
                    else None
                )
            views.append(view)
        return views, int(total)

    # --- sessions ---------------------------------------------------------------------------
    async def list_sessions(
        self, project_id: str, where: Filter, page: int, limit: int, environments: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        """Sessions are derived from traces; an environment filter keeps sessions with traces in it."""
        params = {"p": project_id, **where.params, "limit": limit, "offset": (page - 1) * limit, "envs": environments}
        env_clause = "AND environment IN {envs:Array(String)}" if environments else ""
        grouped = (
            "SELECT session_id AS id, min(timestamp) AS created_at, any(environment) AS session_env "
            f"FROM traces FINAL WHERE project_id = {{p:String}} AND session_id IS NOT NULL {env_clause} "
            "GROUP BY session_id"
        )
        base = f"FROM ({grouped}) WHERE {where.sql}"
        rows = await self.query(f"SELECT * {base} ORDER BY created_at DESC, id {PAGE}", params)
        total = (await self.query(f"SELECT count() AS n {base}", params))[0]["n"]
        return [
            {
                "id": r["id"],
                "createdAt": api_time(r["created_at"]),
                "projectId": project_id,
                "environment": r["session_env"],
            }
            for r in rows
        ], int(total)

    async def get_session(self, project_id: str, session_id: str) -> dict[str, Any] | None:
        rows = await self.query(
            "SELECT * FROM traces FINAL WHERE project_id = {p:String} AND session_id = {s:String} ORDER BY timestamp",
            {"p": project_id, "s": session_id},
        )
        if not rows:
            return None
        details = await self._trace_details(project_id, [r["id"] for r in rows], TRACE_FIELDS)
        return {
            "id": session_id,
            "createdAt": api_time(rows[0]["timestamp"]),
            "projectId": project_id,
            "environment": rows[0]["environment"],
            "traces": [self.trace_view(r, details.get(r["id"], {}), TRACE_FIELDS) for r in rows],
        }

    # --- deletes ----------------------------------------------------------------------------
    async def delete_traces(self, project_id: str, trace_ids: list[str]) -> int:
        """Tombstone the traces and their observations and scores; returns traces found."""
        params = {"p": project_id, "ids": trace_ids}
        found = (
            await self.query(
                "SELECT count() AS n FROM traces FINAL WHERE project_id = {p:String} AND id IN {ids:Array(String)}",
                params,
            )
        )[0]["n"]
        for table, column in (("observations", "trace_id"), ("scores", "trace_id"), ("traces", "id")):
            await self._ch.command(
                f"INSERT INTO {table} SELECT * REPLACE (1 AS is_deleted, now64(3) AS event_ts, now64(3) AS updated_at) "
                f"FROM {table} FINAL WHERE project_id = {{p:String}} AND {column} IN {{ids:Array(String)}}",
                params,
                workload=Workload.INTERACTIVE,
            )
        return int(found)


def _newest(table: str, where: str) -> str:
    """The newest live version of each row matching `where`, without FINAL: point lookups go through
    the bloom-filter indexes first and only then pick versions, far cheaper than merging every part of
    a project. Only valid when `where` filters on columns a row never changes (ids, trace_id)."""
    inner = f"SELECT * FROM {table} WHERE project_id = {{p:String}} AND {where} ORDER BY event_ts DESC LIMIT 1 BY id"
    return f"SELECT * FROM ({inner}) WHERE is_deleted = 0"


def _metrics(observations: list[dict[str, Any]]) -> dict[str, Any]:
    if not observations:
        return {"latency": 0.0, "totalCost": 0.0}
    first = min(o["start_time"] for o in observations)
    last = max(max(o["start_time"], o["end_time"] or o["start_time"]) for o in observations)
    return {
        "latency": (last - first).total_seconds(),
        "totalCost": sum(_number(o["total_cost"]) or 0.0 for o in observations),
    }


def _sum_keys(details: dict[str, Any], needle: str) -> float:
    return sum(float(v) for k, v in details.items() if needle in k)


def observation_view(row: dict[str, Any]) -> dict[str, Any]:
    usage = {k: int(v) for k, v in row["usage_details"]}
    costs = {k: float(v) for k, v in row["cost_details"]}
    start, end, first_token = row["start_time"], row["end_time"], row["completion_start_time"]
    return {
        "id": row["id"],
        "projectId": row["project_id"],
        "traceId": row["trace_id"],
        "parentObservationId": row["parent_observation_id"],
        "name": row["name"] or None,
        "type": row["type"],
        "environment": row["environment"],
        "startTime": api_time(start),
        "endTime": api_time(end),
        "version": row["version"],
        "createdAt": api_time(row["created_at"]),
        "updatedAt": api_time(row["updated_at"]),
        "input": parse_json(row["input"]),
        "output": parse_json(row["output"]),
        "metadata": {k: parse_json(v) for k, v in row["metadata"]},
        "level": row["level"],
        "statusMessage": row["status_message"],
        "model": row["provided_model_name"],
        "modelParameters": parse_json(row["model_parameters"]) or {},
        "completionStartTime": api_time(first_token),
        "promptId": row["prompt_id"],
        "promptName": row["prompt_name"],
        "promptVersion": row["prompt_version"],
        "usageDetails": usage,
        "costDetails": costs,
        "usage": {
            "unit": "TOKENS",
            "input": int(_sum_keys(usage, "input")),
            "output": int(_sum_keys(usage, "output")),
            "total": usage.get("total", 0),
        },
        "unit": "TOKENS",
        "promptTokens": int(_sum_keys(usage, "input")),
        "completionTokens": int(_sum_keys(usage, "output")),
        "totalTokens": usage.get("total", 0),
        "usagePricingTierName": row["usage_pricing_tier_name"],
        "usagePricingTierId": row["usage_pricing_tier_id"],
        "modelId": row["internal_model_id"],
        "inputPrice": None,
        "outputPrice": None,
        "totalPrice": None,
        "calculatedInputCost": _sum_keys(costs, "input") if any("input" in k for k in costs) else None,
        "calculatedOutputCost": _sum_keys(costs, "output") if any("output" in k for k in costs) else None,
        "calculatedTotalCost": _number(row["total_cost"]) or costs.get("total", 0.0),
        "latency": (end - start).total_seconds() if end else None,
        "timeToFirstToken": (first_token - start).total_seconds() if first_token else None,
    }


def score_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "projectId": row["project_id"],
        "environment": row["environment"],
        "name": row["name"],
        "value": row["value"],
        "source": row["source"],
        "authorUserId": row["author_user_id"],
        "comment": row["comment"],
        "metadata": {k: parse_json(v) for k, v in row["metadata"]},
        "configId": row["config_id"],
        "queueId": row["queue_id"],
        "executionTraceId": row["execution_trace_id"],
        "createdAt": api_time(row["created_at"]),
        "updatedAt": api_time(row["updated_at"]),
        "timestamp": api_time(row["timestamp"]),
        "traceId": row["trace_id"],
        "observationId": row["observation_id"],
        "sessionId": row["session_id"],
        "datasetRunId": row["dataset_run_id"],
        "dataType": row["data_type"],
        "stringValue": row["string_value"],
    }
    if row["data_type"] == "TEXT":
        view.pop("value")
    return view


# --- cursor pagination (v2 observations, v3 scores) -------------------------------------------
def encode_cursor(moment: datetime, row_id: str) -> str:
    raw = json.dumps({"t": ch_time(moment), "id": row_id}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return str(data["t"]), str(data["id"])
    except (ValueError, KeyError, TypeError):
        raise BadParameter("cursor", "not a cursor returned by this API") from None


OBSERVATION_GROUPS = {"core", "basic", "time", "io", "metadata", "model", "usage", "prompt", "metrics", "trace_context"}


def observation_v2_view(row: dict[str, Any], groups: set[str]) -> dict[str, Any]:
    full = observation_view(row)
    view: dict[str, Any] = {
        k: full[k] for k in ("id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type")
    }
    if "basic" in groups:
        view.update(
            name=full["name"],
            level=full["level"],
            statusMessage=full["statusMessage"],
            version=full["version"],
            environment=full["environment"],
            isRootObservation=row["parent_observation_id"] is None,
        )
    if "time" in groups:
        view.update(
            completionStartTime=full["completionStartTime"], createdAt=full["createdAt"], updatedAt=full["updatedAt"]
        )
    if "io" in groups:
        view.update(input=row["input"], output=row["output"])  # raw strings, as parseIoAsJson=false
    if "metadata" in groups:
        view["metadata"] = full["metadata"]
    if "model" in groups:
        view.update(
            model=full["model"], internalModelId=row["internal_model_id"], modelParameters=full["modelParameters"]
        )
    if "usage" in groups:
        view.update(
            usageDetails=full["usageDetails"],
            costDetails=full["costDetails"],
            totalCost=full["calculatedTotalCost"],
            usagePricingTierName=full["usagePricingTierName"],
        )
    if "prompt" in groups:
        view.update(promptId=full["promptId"], promptName=full["promptName"], promptVersion=full["promptVersion"])
    if "metrics" in groups:
        view.update(latency=full["latency"], timeToFirstToken=full["timeToFirstToken"])
    return view


def score_v3_view(row: dict[str, Any]) -> dict[str, Any]:
    kind = row["data_type"]
    value: Any = row["value"]
    if kind == "BOOLEAN":
        value = row["string_value"] == "True"
    elif kind in ("CATEGORICAL", "TEXT"):
        value = row["string_value"]
    elif kind == "CORRECTION":
        value = row["long_string_value"]
    if row["observation_id"]:
        subject = {"kind": "observation", "id": row["observation_id"], "traceId": row["trace_id"]}
    elif row["trace_id"]:
        subject = {"kind": "trace", "id": row["trace_id"]}
    elif row["session_id"]:
        subject = {"kind": "session", "id": row["session_id"]}
    else:
        subject = None
    return {
        "id": row["id"],
        "projectId": row["project_id"],
        "name": row["name"],
        "source": row["source"],
        "timestamp": api_time(row["timestamp"]),
        "environment": row["environment"],
        "createdAt": api_time(row["created_at"]),
        "updatedAt": api_time(row["updated_at"]),
        "comment": row["comment"],
        "configId": row["config_id"],
        "metadata": {k: parse_json(v) for k, v in row["metadata"]},
        "authorUserId": row["author_user_id"],
        "queueId": row["queue_id"],
        "dataType": kind,
        "value": value,
        "subject": subject,
    }


async def cursor_page(
    service: ReadService, table: str, time_column: str, project_id: str, where: Filter, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Keyset pagination newest first: fetch limit+1 to know whether a next page exists."""
    params = {"p": project_id, **where.params, "limit": limit + 1}
    clauses = [where.sql]
    if cursor:
        moment, last_id = decode_cursor(cursor)
        clauses.append(f"({time_column}, id) < ({{c_t:DateTime64(3)}}, {{c_id:String}})")
        params.update(c_t=moment, c_id=last_id)
    rows = await service.query(
        f"SELECT * FROM {table} FINAL WHERE project_id = {{p:String}} AND {' AND '.join(clauses)} "
        f"ORDER BY {time_column} DESC, id DESC LIMIT {{limit:UInt32}}",
        params,
    )
    next_cursor = encode_cursor(rows[limit - 1][time_column], rows[limit - 1]["id"]) if len(rows) > limit else None
    return rows[:limit], next_cursor
