"""Read queries for the public API: every query runs in the interactive workload class.

Reads see the latest version of each row (`FINAL`, which also drops `is_deleted` rows) and always
filter by the caller's project. Deletes write tombstones (the row again with `is_deleted = 1` and a
new `event_ts`), so readers stop seeing the entity at once and exports see the deletion as a
newer version instead of missing it.

Rows come from ClickHouse as dicts (`Row`); every method answers a response model.
"""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from typing import Any

from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.enums import ScoreDataType
from tracehouse.metadata import MetadataDB, get_project
from tracehouse.pricing.models import ModelPrices
from tracehouse.pricing.service import pricing_service
from tracehouse.queries.models import (
    SCORE_V3_FIELD_GROUPS,
    TRACE_FIELD_GROUPS,
    Cursor,
    CursorPage,
    GetScoresResponse,
    GetScoresV3Meta,
    GetScoresV3Response,
    MetaResponse,
    Observation,
    ObservationQuery,
    ObservationsV2Meta,
    ObservationsV2Response,
    ObservationsViews,
    ObservationV2,
    Organization,
    Page,
    PaginatedSessions,
    Project,
    Projects,
    Score,
    ScoreQuery,
    ScoreSubject,
    ScoreTrace,
    ScoreV3,
    ScoreV3Query,
    ScoreWithTrace,
    Session,
    SessionQuery,
    SessionWithTraces,
    TraceQuery,
    Traces,
    TraceWithDetails,
    TraceWithFullDetails,
    Usage,
)
from tracehouse.queries.sql import (
    PAGE,
    Filter,
    keyset_page,
    newest,
    observation_filter,
    observations_source,
    score_filter,
    score_v3_filter,
    sessions_source,
    trace_filter,
    trace_order,
)

Row = dict[str, Any]
# Per trace id: "observations"/"scores" (id lists), "latency", "totalCost".
TraceDetails = dict[str, Any]
_TOTAL = "tracehouse_matching_rows"  # the window count's column: no table has a column of that name
_NO_TRACE = ScoreTrace(user_id=None, tags=None, environment=None, session_id=None)


class ReadService:
    def __init__(self, clickhouse: ClickHouse, metadata: MetadataDB) -> None:
        self._ch = clickhouse
        self._metadata = metadata
        self._pricing = pricing_service(metadata)

    async def _prices(self, project_id: str, rows: list[Row]) -> dict[str, ModelPrices]:
        """The default-tier prices of the models these observations were priced with (cached)."""
        return await self._pricing.prices_for(project_id, (r["internal_model_id"] for r in rows))

    async def query(self, sql: str, params: dict[str, Any]) -> list[Row]:
        # Versions of a row never cross partitions (traces, observations and scores are partitioned by
        # their immutable time column), so FINAL may merge each partition on its own, in parallel.
        return await self._ch.query(
            sql, params, workload=Workload.INTERACTIVE, settings={"do_not_merge_across_partitions_select_final": 1}
        )

    async def latest(self, table: str, where: str, params: dict[str, Any], order: str = "") -> list[Row]:
        return await self.query(f"SELECT * FROM ({newest(table, where)}) {order}", params)

    async def _counted_page(self, columns: str, base: str, order: str, params: dict[str, Any]) -> tuple[list[Row], int]:
        """One offset page of narrow rows and the count of all that match, in one scan: a window count
        rides along with the page (two queries read every matching granule twice). Only a page past the
        end, which has no row to carry the count, needs a query of its own."""
        rows = await self.query(f"SELECT {columns}, count() OVER () AS {_TOTAL} {base} ORDER BY {order} {PAGE}", params)
        total = int(rows[0][_TOTAL]) if rows else 0
        for row in rows:
            del row[_TOTAL]
        if not rows and params["offset"]:
            total = int((await self.query(f"SELECT count() AS n {base}", params))[0]["n"])
        return rows, total

    async def _page(self, project_id: str, source: str, where: Filter, order: str, page: Page) -> tuple[list[Row], int]:
        """One offset page of `SELECT *`-able `source` rows and the count of all that match."""
        params = {"p": project_id, **where.params, "limit": page.limit, "offset": page.offset}
        base = f"FROM {source} WHERE project_id = {{p:String}} AND {where.sql}"
        rows, counted = await asyncio.gather(
            self.query(f"SELECT * {base} ORDER BY {order} {PAGE}", params),
            self.query(f"SELECT count() AS n {base}", params),
        )
        return rows, int(counted[0]["n"])

    # --- traces ----------------------------------------------------------------------------
    async def list_traces(self, project_id: str, query: TraceQuery, page: Page) -> Traces:
        where = trace_filter(query)
        params = {"p": project_id, **where.params, "limit": page.limit, "offset": page.offset}
        base = f"FROM traces FINAL WHERE project_id = {{p:String}} AND {where.sql}"
        # Two steps: pick the page's ids reading only the columns the filter and order need, then fetch
        # those rows in full by id (input/output are most of the bytes and only 50 rows need them).
        page_ids, total = await self._counted_page("id", base, trace_order(query.order), params)
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
        details = await self._trace_details(project_id, [r["id"] for r in rows], query.fields)
        data = [trace_with_details(r, details.get(r["id"], {}), query.fields) for r in rows]
        return Traces(data=data, meta=page_meta(page, total))

    async def get_trace(
        self, project_id: str, trace_id: str, fields: frozenset[str] = TRACE_FIELD_GROUPS
    ) -> TraceWithFullDetails | None:
        """One trace; each field group is read only when requested (latency/totalCost are -1
        without metrics, as in the list)."""
        params = {"p": project_id, "id": trace_id}
        rows, observations, scores = await asyncio.gather(
            self.latest("traces", "id = {id:String}", params),
            self.latest("observations", "trace_id = {id:String}", params, "ORDER BY start_time")
            if fields & {"observations", "metrics"}
            else _no_rows(),
            self.latest("scores", "trace_id = {id:String}", params, "ORDER BY timestamp")
            if "scores" in fields
            else _no_rows(),
        )
        if not rows:
            return None
        metrics = _metrics(observations) if "metrics" in fields else {"latency": -1.0, "totalCost": -1.0}
        prices = await self._prices(project_id, observations) if "observations" in fields else {}
        return TraceWithFullDetails(
            **_trace_fields(rows[0], io="io" in fields),
            observations=[observation_view(o, prices) for o in observations] if "observations" in fields else [],
            scores=[score_view(s) for s in scores],
            latency=metrics["latency"],
            total_cost=metrics["totalCost"],
            html_path=_html_path(rows[0]),
        )

    async def _trace_details(self, project_id: str, ids: list[str], fields: frozenset[str]) -> dict[str, TraceDetails]:
        if not ids or not fields & {"observations", "metrics", "scores"}:
            return {}
        details: dict[str, TraceDetails] = {i: {} for i in ids}
        params = {"p": project_id, "ids": ids}
        if fields & {"observations", "metrics"}:
            for row in await self.query(
                "SELECT trace_id, groupArray(id) AS ids, min(start_time) AS first, "
                "max(greatest(start_time, coalesce(end_time, start_time))) AS last, sum(total_cost) AS cost "
                f"FROM ({newest('observations', 'trace_id IN {ids:Array(String)}')}) GROUP BY trace_id",
                params,
            ):
                details[row["trace_id"]].update(
                    observations=row["ids"],
                    latency=(row["last"] - row["first"]).total_seconds(),
                    totalCost=_number(row["cost"]) or 0.0,
                )
        if "scores" in fields:
            for row in await self.query(
                f"SELECT trace_id, groupArray(id) AS ids FROM ({newest('scores', 'trace_id IN {ids:Array(String)}')}) "
                "GROUP BY trace_id",
                params,
            ):
                details[row["trace_id"]]["scores"] = row["ids"]
        return details

    # --- observations ---------------------------------------------------------------------
    async def list_observations(self, project_id: str, query: ObservationQuery, page: Page) -> ObservationsViews:
        source, where = observations_source(query), observation_filter(query)
        rows, total = await self._page(project_id, source, where, "start_time DESC, id", page)
        prices = await self._prices(project_id, rows)
        return ObservationsViews(data=[observation_view(r, prices) for r in rows], meta=page_meta(page, total))

    async def get_observation(self, project_id: str, observation_id: str) -> Observation | None:
        rows = await self.latest("observations", "id = {id:String}", {"p": project_id, "id": observation_id})
        return observation_view(rows[0], await self._prices(project_id, rows)) if rows else None

    async def list_observations_v2(
        self, project_id: str, query: ObservationQuery, cursor: CursorPage, groups: frozenset[str]
    ) -> ObservationsV2Response:
        rows, next_cursor = await self._keyset(
            project_id, "observations", "start_time", observation_filter(query), cursor
        )
        traces = await self._observation_traces(project_id, rows) if groups & {"basic", "trace_context"} else {}
        meta = ObservationsV2Meta(cursor=next_cursor) if next_cursor else ObservationsV2Meta()
        prices = await self._prices(project_id, rows) if "model" in groups else {}
        data = [observation_v2_view(r, groups, traces.get(r["trace_id"]), prices) for r in rows]
        return ObservationsV2Response(data=data, meta=meta)

    async def _observation_traces(self, project_id: str, rows: list[Row]) -> dict[str, Row]:
        """The trace attributes v2's basic and trace_context groups show, by trace id."""
        if not rows:
            return {}
        found = await self.query(
            "SELECT id, name, user_id, session_id, bookmarked, public, tags, release "
            f"FROM ({newest('traces', 'id IN {ids:Array(String)}')})",
            {"p": project_id, "ids": sorted({r["trace_id"] for r in rows})},
        )
        return {r["id"]: r for r in found}

    async def _keyset(
        self, project_id: str, table: str, time_column: str, where: Filter, cursor: CursorPage
    ) -> tuple[list[Row], str | None]:
        """Keyset pagination newest first: fetch limit+1 to know whether a next page exists."""
        sql, params = keyset_page(table, time_column, where, cursor.after)
        rows = await self.query(sql, {"p": project_id, **params, "limit": cursor.limit + 1})
        if len(rows) <= cursor.limit:
            return rows, None
        last = rows[cursor.limit - 1]
        return rows[: cursor.limit], Cursor.at(last[time_column], last["id"]).encode()

    # --- scores -----------------------------------------------------------------------------
    async def list_scores(self, project_id: str, query: ScoreQuery, page: Page) -> GetScoresResponse:
        """v1 and v2 scores, each with its trace's attributes."""
        rows, total = await self._page(project_id, "scores FINAL", score_filter(query), "timestamp DESC, id", page)
        if not query.include_trace:  # fields without `trace`: null, as Langfuse
            data = [ScoreWithTrace(**_score_fields(r), trace=None) for r in rows]
            return GetScoresResponse(data=data, meta=page_meta(page, total))
        traces = await self._score_traces(project_id, [r["trace_id"] for r in rows if r["trace_id"]])
        # v1's type requires the trace object, v2's allows null.
        missing = _NO_TRACE if query.trace_only else None
        data = [ScoreWithTrace(**_score_fields(r), trace=traces.get(r["trace_id"] or "", missing)) for r in rows]
        return GetScoresResponse(data=data, meta=page_meta(page, total))

    async def _score(self, project_id: str, score_id: str) -> Row | None:
        rows = await self.latest("scores", "id = {id:String}", {"p": project_id, "id": score_id})
        return rows[0] if rows else None

    async def get_trace_score(self, project_id: str, score_id: str) -> Score | None:
        """v1's score by id: a trace's score that v1 lists (not a correction)."""
        row = await self._score(project_id, score_id)
        if row is None or row["trace_id"] is None or row["data_type"] == ScoreDataType.CORRECTION:
            return None
        return score_view(row)

    async def get_score_with_trace(self, project_id: str, score_id: str) -> ScoreWithTrace | None:
        """v2's score by id (any data type and subject) with its trace's attributes."""
        row = await self._score(project_id, score_id)
        if row is None:
            return None
        traces = await self._score_traces(project_id, [row["trace_id"]] if row["trace_id"] else [])
        return ScoreWithTrace(**_score_fields(row), trace=traces.get(row["trace_id"] or ""))

    async def _score_traces(self, project_id: str, trace_ids: list[str]) -> dict[str, ScoreTrace]:
        if not trace_ids:
            return {}
        rows = await self.query(
            f"SELECT id, user_id, tags, environment, session_id FROM ({newest('traces', 'id IN {ids:Array(String)}')})",
            {"p": project_id, "ids": sorted(set(trace_ids))},
        )
        return {
            r["id"]: ScoreTrace(
                user_id=r["user_id"], tags=list(r["tags"]), environment=r["environment"], session_id=r["session_id"]
            )
            for r in rows
        }

    async def list_scores_v3(
        self,
        project_id: str,
        query: ScoreV3Query,
        cursor: CursorPage,
        groups: frozenset[str] = SCORE_V3_FIELD_GROUPS,
    ) -> GetScoresV3Response:
        rows, next_cursor = await self._keyset(project_id, "scores", "timestamp", score_v3_filter(query), cursor)
        meta = (
            GetScoresV3Meta(limit=cursor.limit, cursor=next_cursor)
            if next_cursor
            else GetScoresV3Meta(limit=cursor.limit)
        )
        return GetScoresV3Response(data=[score_v3_view(r, groups) for r in rows], meta=meta)

    # --- sessions ---------------------------------------------------------------------------
    async def list_sessions(self, project_id: str, query: SessionQuery, page: Page) -> PaginatedSessions:
        grouped, where = sessions_source(query)
        params = {"p": project_id, **where.params, "limit": page.limit, "offset": page.offset}
        base = f"FROM ({grouped}) WHERE {where.sql}"
        rows, total = await self._counted_page("*", base, "created_at DESC, id", params)
        data = [
            Session(id=r["id"], created_at=r["created_at"], project_id=project_id, environment=r["session_env"])
            for r in rows
        ]
        return PaginatedSessions(data=data, meta=page_meta(page, total))

    async def get_session(self, project_id: str, session_id: str) -> SessionWithTraces | None:
        rows = await self.query(
            "SELECT * FROM traces FINAL WHERE project_id = {p:String} AND session_id = {s:String} ORDER BY timestamp",
            {"p": project_id, "s": session_id},
        )
        if not rows:
            return None
        details = await self._trace_details(project_id, [r["id"] for r in rows], TRACE_FIELD_GROUPS)
        return SessionWithTraces(
            id=session_id,
            created_at=rows[0]["timestamp"],
            project_id=project_id,
            environment=rows[0]["environment"],
            traces=[trace_with_details(r, details.get(r["id"], {}), TRACE_FIELD_GROUPS) for r in rows],
        )

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

    async def delete_score(self, project_id: str, score_id: str) -> bool:
        """Tombstone one score (any subject); False when the project has no such live score."""
        params = {"p": project_id, "id": score_id}
        if await self._score(project_id, score_id) is None:
            return False
        await self._ch.command(
            "INSERT INTO scores SELECT * REPLACE (1 AS is_deleted, now64(3) AS event_ts, now64(3) AS updated_at) "
            f"FROM ({newest('scores', 'id = {id:String}')})",
            params,
            workload=Workload.INTERACTIVE,
        )
        return True

    # --- projects ---------------------------------------------------------------------------
    async def projects(self, project_id: str) -> Projects | None:
        """The key's own project (the SDKs call this to learn it)."""
        project = await asyncio.to_thread(get_project, self._metadata, project_id)
        if project is None:
            return None
        organization = Organization(id="default", name="default")
        return Projects(
            data=[
                Project(
                    id=project.id,
                    name=project.name,
                    metadata={},
                    organization=organization,
                    retention_days=project.retention_days,
                )
            ]
        )


async def _no_rows() -> list[Row]:
    return []


# --- rows to response models ------------------------------------------------------------------
def page_meta(page: Page, total: int) -> MetaResponse:
    return MetaResponse(page=page.page, limit=page.limit, total_items=total, total_pages=math.ceil(total / page.limit))


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


def _metadata(row: Row) -> dict[str, Any]:
    return {k: parse_json(v) for k, v in row["metadata"]}


def _html_path(row: Row) -> str:
    return f"/project/{row['project_id']}/traces/{row['id']}"


def _trace_fields(row: Row, *, io: bool) -> dict[str, Any]:
    """The fields every trace shape shares; metadata and I/O are null without the io group."""
    return {
        "id": row["id"],
        "external_id": None,
        "timestamp": row["timestamp"],
        "name": row["name"] or None,
        "user_id": row["user_id"],
        "release": row["release"],
        "version": row["version"],
        "project_id": row["project_id"],
        "environment": row["environment"],
        "public": bool(row["public"]),
        "bookmarked": bool(row["bookmarked"]),
        "tags": list(row["tags"]),
        "session_id": row["session_id"],
        "metadata": _metadata(row) if io else None,
        "input": parse_json(row["input"]) if io else None,
        "output": parse_json(row["output"]) if io else None,
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def trace_with_details(row: Row, details: TraceDetails, fields: frozenset[str]) -> TraceWithDetails:
    metrics = "metrics" in fields
    return TraceWithDetails(
        **_trace_fields(row, io="io" in fields),
        observations=details.get("observations", []) if "observations" in fields else [],
        scores=details.get("scores", []) if "scores" in fields else [],
        latency=details.get("latency", 0.0) if metrics else -1,
        total_cost=details.get("totalCost", 0.0) if metrics else -1,
        html_path=_html_path(row),
    )


def _metrics(observations: list[Row]) -> dict[str, float]:
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


def _price(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _price_text(value: Decimal | None) -> str | None:
    """v2's prices are decimal strings (e.g. "0.00000015")."""
    return None if value is None else format(value.normalize(), "f")


def observation_view(row: Row, prices: dict[str, ModelPrices] | None = None) -> Observation:
    model_prices = (prices or {}).get(row["internal_model_id"] or "")
    usage = {k: int(v) for k, v in row["usage_details"]}
    costs = {k: float(v) for k, v in row["cost_details"]}
    start, end, first_token = row["start_time"], row["end_time"], row["completion_start_time"]
    input_tokens, output_tokens, total_tokens = (
        int(_sum_keys(usage, "input")),
        int(_sum_keys(usage, "output")),
        usage.get("total", 0),
    )
    return Observation(
        id=row["id"],
        project_id=row["project_id"],
        trace_id=row["trace_id"],
        parent_observation_id=row["parent_observation_id"],
        name=row["name"] or None,
        type=row["type"],
        environment=row["environment"],
        start_time=start,
        end_time=end,
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        input=parse_json(row["input"]),
        output=parse_json(row["output"]),
        metadata=_metadata(row),
        level=row["level"],
        status_message=row["status_message"],
        model=row["provided_model_name"],
        model_parameters=parse_json(row["model_parameters"]) or {},
        completion_start_time=first_token,
        prompt_id=row["prompt_id"],
        prompt_name=row["prompt_name"],
        prompt_version=row["prompt_version"],
        usage_details=usage,
        cost_details=costs,
        usage=Usage(unit="TOKENS", input=input_tokens, output=output_tokens, total=total_tokens),
        unit="TOKENS",
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        total_tokens=total_tokens,
        usage_pricing_tier_name=row["usage_pricing_tier_name"],
        usage_pricing_tier_id=row["usage_pricing_tier_id"],
        model_id=model_prices.model_id if model_prices else None,
        input_price=_price(model_prices.input_price) if model_prices else None,
        output_price=_price(model_prices.output_price) if model_prices else None,
        total_price=_price(model_prices.total_price) if model_prices else None,
        calculated_input_cost=_sum_keys(costs, "input") if any("input" in k for k in costs) else None,
        calculated_output_cost=_sum_keys(costs, "output") if any("output" in k for k in costs) else None,
        calculated_total_cost=_number(row["total_cost"]) or costs.get("total", 0.0),
        latency=(end - start).total_seconds() if end else None,
        time_to_first_token=(first_token - start).total_seconds() if first_token else None,
    )


def observation_v2_view(
    row: Row, groups: frozenset[str], trace: Row | None = None, prices: dict[str, ModelPrices] | None = None
) -> ObservationV2:
    """The core fields and each requested group (the others stay unset, so they are left out).
    `trace`: the observation's trace row (basic and trace_context read it), None when not stored."""
    full = observation_view(row)
    fields: dict[str, Any] = {
        "id": full.id,
        "trace_id": full.trace_id,
        "start_time": full.start_time,
        "end_time": full.end_time,
        "project_id": full.project_id,
        "parent_observation_id": full.parent_observation_id,
        "type": full.type,
    }
    if "basic" in groups:
        fields.update(
            name=full.name,
            level=full.level,
            status_message=full.status_message,
            version=full.version,
            environment=full.environment,
            is_root_observation=row["parent_observation_id"] is None,
            bookmarked=bool(trace["bookmarked"]) if trace else None,
            public=bool(trace["public"]) if trace else None,
            user_id=trace["user_id"] if trace else None,
            session_id=trace["session_id"] if trace else None,
        )
    if "time" in groups:
        fields.update(
            completion_start_time=full.completion_start_time, created_at=full.created_at, updated_at=full.updated_at
        )
    if "io" in groups:
        fields.update(input=row["input"], output=row["output"])
    if "metadata" in groups:
        fields.update(metadata=full.metadata)
    if "model" in groups:
        model_prices = (prices or {}).get(row["internal_model_id"] or "")
        fields.update(
            model=full.model,
            internal_model_id=row["internal_model_id"],
            model_parameters=full.model_parameters,
            model_id=model_prices.model_id if model_prices else None,
            input_price=_price_text(model_prices.input_price) if model_prices else None,
            output_price=_price_text(model_prices.output_price) if model_prices else None,
            total_price=_price_text(model_prices.total_price) if model_prices else None,
        )
    if "usage" in groups:
        fields.update(
            usage_details=full.usage_details,
            cost_details=full.cost_details,
            total_cost=full.calculated_total_cost,
            usage_pricing_tier_name=full.usage_pricing_tier_name,
        )
    if "prompt" in groups:
        fields.update(prompt_id=full.prompt_id, prompt_name=full.prompt_name, prompt_version=full.prompt_version)
    if "metrics" in groups:
        fields.update(latency=full.latency, time_to_first_token=full.time_to_first_token)
    if "trace_context" in groups:
        fields.update(
            trace_name=(trace["name"] or None) if trace else None,
            tags=list(trace["tags"]) if trace else None,
            release=trace["release"] if trace else None,
        )
    return ObservationV2(**fields)


def _score_fields(row: Row) -> dict[str, Any]:
    kind = row["data_type"]
    fields: dict[str, Any] = {
        "id": row["id"],
        "project_id": row["project_id"],
        "environment": row["environment"],
        "name": row["name"],
        "source": row["source"],
        "author_user_id": row["author_user_id"],
        "comment": row["comment"],
        "metadata": _metadata(row),
        "config_id": row["config_id"],
        "queue_id": row["queue_id"],
        "execution_trace_id": row["execution_trace_id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "timestamp": row["timestamp"],
        "trace_id": row["trace_id"],
        "observation_id": row["observation_id"],
        "session_id": row["session_id"],
        "dataset_run_id": row["dataset_run_id"],
        "data_type": kind,
        # A correction's text is stored in long_string_value; the type requires it as stringValue.
        "string_value": row["long_string_value"] if kind == ScoreDataType.CORRECTION else row["string_value"],
    }
    if kind != ScoreDataType.TEXT:  # TEXT scores have no value (left unset, so left out)
        fields["value"] = row["value"]
    return fields


def score_view(row: Row) -> Score:
    return Score(**_score_fields(row))


def _subject(row: Row) -> ScoreSubject | None:
    if row["observation_id"]:
        return ScoreSubject(kind="observation", id=row["observation_id"], trace_id=row["trace_id"])
    if row["trace_id"]:
        return ScoreSubject(kind="trace", id=row["trace_id"])
    if row["session_id"]:
        return ScoreSubject(kind="session", id=row["session_id"])
    return None


def _typed_value(row: Row) -> Any:
    """v3's value has the score's own type: BOOLEAN a boolean, text kinds their string."""
    kind = row["data_type"]
    if kind == ScoreDataType.BOOLEAN:
        return row["string_value"] == "True"
    if kind in (ScoreDataType.CATEGORICAL, ScoreDataType.TEXT):
        return row["string_value"]
    if kind == ScoreDataType.CORRECTION:
        return row["long_string_value"]
    return row["value"]


def score_v3_view(row: Row, groups: frozenset[str] = SCORE_V3_FIELD_GROUPS) -> ScoreV3:
    """The core fields and each requested group (the others stay unset, so they are left out)."""
    fields: dict[str, Any] = {
        "id": row["id"],
        "project_id": row["project_id"],
        "name": row["name"],
        "source": row["source"],
        "timestamp": row["timestamp"],
        "environment": row["environment"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "data_type": row["data_type"],
        "value": _typed_value(row),
    }
    if "details" in groups:
        fields.update(comment=row["comment"], config_id=row["config_id"], metadata=_metadata(row))
    if "annotation" in groups:
        fields.update(author_user_id=row["author_user_id"], queue_id=row["queue_id"])
    if "subject" in groups:
        fields.update(subject=_subject(row))
    return ScoreV3(**fields)
