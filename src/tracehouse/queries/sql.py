"""SQL for the read API: WHERE clauses from the query objects, always with bound parameters.

Every filter here is applied next to `project_id = {p:String}`, which the service adds; a filter
that reads the traces table scopes that read to `{p}` as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracehouse.queries.models import (
    Cursor,
    ObservationQuery,
    ScoreQuery,
    ScoreV3Query,
    SessionQuery,
    TimeRange,
    TraceOrder,
    TraceOrderField,
    TraceQuery,
)
from tracehouse.timefmt import ch_time

# UInt64: page x limit overflows 32 bits long before `page` does (an offset that wrapped returned page 1).
PAGE = "LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
TRACE_ORDER_COLUMNS: dict[TraceOrderField, str] = {
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
# userId lives on the trace: a semi-join on the user's trace ids, cheaper than joining every trace.
_USER_TRACES = "trace_id IN (SELECT id FROM traces FINAL WHERE project_id = {p:String} AND user_id = {user:String})"


@dataclass
class Filter:
    """WHERE clauses and their parameters, built together so values are always bound."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, clause: str, **params: Any) -> None:
        self.clauses.append(clause)
        self.params.update(params)

    def equals(self, column: str, key: str, value: str | None) -> None:
        if value is not None:
            self.add(f"{column} = {{{key}:String}}", **{key: value})

    def any_of(self, column: str, key: str, values: tuple[str, ...]) -> None:
        if values:
            self.add(f"{column} IN {{{key}:Array(String)}}", **{key: list(values)})

    def within(self, column: str, span: TimeRange) -> None:
        if span.start is not None:
            self.add(f"{column} >= {{from_ts:DateTime64(3)}}", from_ts=ch_time(span.start))
        if span.end is not None:
            self.add(f"{column} < {{to_ts:DateTime64(3)}}", to_ts=ch_time(span.end))

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1"


def trace_filter(query: TraceQuery) -> Filter:
    where = Filter()
    where.equals("user_id", "user_id", query.user_id)
    where.equals("name", "name", query.name)
    where.equals("session_id", "session_id", query.session_id)
    where.equals("version", "version", query.version)
    where.equals("release", "release", query.release)
    if query.tags:
        where.add("hasAll(tags, {tags:Array(String)})", tags=list(query.tags))
    where.any_of("environment", "envs", query.environments)
    where.within("timestamp", query.timestamp)
    return where


def trace_order(order: TraceOrder) -> str:
    return f"{TRACE_ORDER_COLUMNS[order.field]} {order.direction}, id"


def observation_filter(query: ObservationQuery) -> Filter:
    """One builder for v1 and v2 observations."""
    where = Filter()
    where.equals("name", "name", query.name)
    where.equals("type", "type", query.type)
    where.equals("trace_id", "trace", query.trace_id)
    where.equals("level", "level", query.level)
    where.equals("version", "version", query.version)
    where.equals("parent_observation_id", "parent", query.parent_observation_id)
    if query.user_id is not None:
        where.add(_USER_TRACES, user=query.user_id)
    if query.is_root is not None:
        where.add("parent_observation_id IS NULL" if query.is_root else "parent_observation_id IS NOT NULL")
    where.any_of("environment", "envs", query.environments)
    where.within("start_time", query.start_time)
    return where


def observations_source(query: ObservationQuery) -> str:
    """What v1 observations read. For one trace: its rows' newest versions through the trace_id index
    (trace_id never changes, so this is exact); `observation_filter` then applies to those versions."""
    if query.trace_id is None:
        return "observations FINAL"
    return f"({newest('observations', 'trace_id = {trace:String}')})"


def score_filter(query: ScoreQuery) -> Filter:
    """v1 and v2 scores. CORRECTION scores are never listed (as Langfuse)."""
    where = Filter()
    where.add("data_type != 'CORRECTION'")
    if query.trace_only:
        where.add("trace_id IS NOT NULL")
    where.equals("name", "name", query.name)
    where.equals("source", "source", query.source)
    where.equals("data_type", "dataType", query.data_type)
    where.equals("trace_id", "traceId", query.trace_id)
    where.equals("session_id", "sessionId", query.session_id)
    where.equals("config_id", "configId", query.config_id)
    where.equals("queue_id", "queueId", query.queue_id)
    where.equals("dataset_run_id", "datasetRunId", query.dataset_run_id)
    where.any_of("id", "score_ids", query.score_ids)
    where.any_of("observation_id", "obs_ids", query.observation_ids)
    where.any_of("environment", "envs", query.environments)
    if query.user_id is not None:
        where.add(_USER_TRACES, user=query.user_id)
    where.within("timestamp", query.timestamp)
    return where


def score_v3_filter(query: ScoreV3Query) -> Filter:
    where = Filter()
    where.any_of("id", "id", query.ids)
    where.any_of("name", "name", query.names)
    where.any_of("source", "source", query.sources)
    where.any_of("data_type", "kind", query.data_types)
    where.any_of("environment", "env", query.environments)
    where.any_of("trace_id", "trace", query.trace_ids)
    where.any_of("session_id", "session", query.session_ids)
    where.any_of("observation_id", "obs", query.observation_ids)
    where.within("timestamp", query.timestamp)
    return where


def sessions_source(query: SessionQuery) -> tuple[str, Filter]:
    """Sessions grouped from traces (an environment filter keeps sessions with a trace in it), and
    the filter on the grouped rows."""
    env_clause = "AND environment IN {envs:Array(String)}" if query.environments else ""
    grouped = (
        "SELECT session_id AS id, min(timestamp) AS created_at, any(environment) AS session_env "
        f"FROM traces FINAL WHERE project_id = {{p:String}} AND session_id IS NOT NULL {env_clause} "
        "GROUP BY session_id"
    )
    where = Filter(params={"envs": list(query.environments)})
    where.within("created_at", query.created_at)
    return grouped, where


def newest(table: str, where: str) -> str:
    """The newest live version of each row matching `where`, without FINAL: point lookups go through
    the bloom-filter indexes first and only then pick versions, far cheaper than merging every part of
    a project. Only valid when `where` filters on columns a row never changes (ids, trace_id)."""
    inner = f"SELECT * FROM {table} WHERE project_id = {{p:String}} AND {where} ORDER BY event_ts DESC LIMIT 1 BY id"
    return f"SELECT * FROM ({inner}) WHERE is_deleted = 0"


def keyset_page(table: str, time_column: str, where: Filter, after: Cursor | None) -> tuple[str, dict[str, Any]]:
    """Newest first, after the cursor; the caller binds `limit` (one more than the page, to see a next)."""
    clauses = [where.sql]
    params = dict(where.params)
    if after is not None:
        clauses.append(f"({time_column}, id) < ({{c_t:DateTime64(3)}}, {{c_id:String}})")
        params.update(c_t=after.moment, c_id=after.row_id)
    sql = (
        f"SELECT * FROM {table} FINAL WHERE project_id = {{p:String}} AND {' AND '.join(clauses)} "
        f"ORDER BY {time_column} DESC, id DESC LIMIT {{limit:UInt32}}"
    )
    return sql, params
