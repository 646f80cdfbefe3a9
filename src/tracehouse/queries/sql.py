"""SQL for the read API: WHERE clauses from the query objects, always with bound parameters.

Every filter here is applied next to `project_id = {p:String}`, which the service adds; a filter
that reads another table (a trace's tags, a trace's observations, a row's scores) scopes that read
to `{p}` as well. The `filter` parameter's columns are stated once per route (`TRACE_COLUMNS`,
`OBSERVATION_COLUMNS`, `SCORE_COLUMNS`); a value is always a bound parameter, never SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from tracehouse.queries.models import (
    Conditions,
    Cursor,
    FilterCondition,
    FilterType,
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
# userId and sessionId live on the trace: a semi-join on the trace ids, cheaper than joining every trace.
_USER_TRACES = "trace_id IN (SELECT id FROM traces FINAL WHERE project_id = {p:String} AND user_id = {user:String})"
_SESSION_TRACES = (
    "trace_id IN (SELECT id FROM traces FINAL WHERE project_id = {p:String} AND session_id = {session:String})"
)


@dataclass
class Filter:
    """WHERE clauses and their parameters, built together so values are always bound."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    bound: int = 0

    def add(self, clause: str, **params: Any) -> None:
        self.clauses.append(clause)
        self.params.update(params)

    def bind(self, value: Any, ch_type: str) -> str:
        """A fresh parameter holding `value`; the placeholder to put in a clause."""
        self.bound += 1
        name = f"fv{self.bound}"
        self.params[name] = value
        return f"{{{name}:{ch_type}}}"

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


def _covered(filters: Conditions) -> frozenset[str]:
    """Columns a `filter` condition targets: Langfuse drops the simple parameters on those columns."""
    return frozenset(condition.column for condition in filters)


def trace_filter(query: TraceQuery) -> Filter:
    where, covered = Filter(), _covered(query.filters)
    if "userId" not in covered:
        where.equals("user_id", "user_id", query.user_id)
    if "name" not in covered:
        where.equals("name", "name", query.name)
    if "sessionId" not in covered:
        where.equals("session_id", "session_id", query.session_id)
    if "version" not in covered:
        where.equals("version", "version", query.version)
    if "release" not in covered:
        where.equals("release", "release", query.release)
    if query.tags and "tags" not in covered:
        where.add("hasAll(tags, {tags:Array(String)})", tags=list(query.tags))
    if "environment" not in covered:
        where.any_of("environment", "envs", query.environments)
    if "timestamp" not in covered:
        where.within("timestamp", query.timestamp)
    add_conditions(where, query.filters, TRACE_COLUMNS)
    return where


def trace_order(order: TraceOrder) -> str:
    return f"{TRACE_ORDER_COLUMNS[order.field]} {order.direction}, id"


def observation_filter(query: ObservationQuery) -> Filter:
    """One builder for v1 and v2 observations."""
    where, covered = Filter(), _covered(query.filters)
    if "name" not in covered:
        where.equals("name", "name", query.name)
    if "type" not in covered:
        where.equals("type", "type", query.type)
    if "traceId" not in covered:
        where.equals("trace_id", "trace", query.trace_id)
    if "level" not in covered:
        where.equals("level", "level", query.level)
    if "version" not in covered:
        where.equals("version", "version", query.version)
    if query.parent_observation_id == "":  # an empty parent means "no parent" (Langfuse's v2 semantics)
        where.add("parent_observation_id IS NULL")
    else:
        where.equals("parent_observation_id", "parent", query.parent_observation_id)
    if query.user_id is not None and "userId" not in covered:
        where.add(_USER_TRACES, user=query.user_id)
    if query.session_id is not None and "sessionId" not in covered:
        where.add(_SESSION_TRACES, session=query.session_id)
    if query.is_root is not None and "isRootObservation" not in covered:
        where.add("parent_observation_id IS NULL" if query.is_root else "parent_observation_id IS NOT NULL")
    if "environment" not in covered:
        where.any_of("environment", "envs", query.environments)
    if "startTime" not in covered:
        where.within("start_time", query.start_time)
    add_conditions(where, query.filters, OBSERVATION_COLUMNS)
    return where


def observations_source(query: ObservationQuery) -> str:
    """What v1 observations read. For one trace: its rows' newest versions through the trace_id index
    (trace_id never changes, so this is exact); `observation_filter` then applies to those versions."""
    if query.trace_id is None or "traceId" in _covered(query.filters):
        return "observations FINAL"
    return f"({newest('observations', 'trace_id = {trace:String}')})"


def score_filter(query: ScoreQuery) -> Filter:
    """v1 and v2 scores. CORRECTION scores are never listed (as Langfuse)."""
    where, covered = Filter(), _covered(query.filters)
    where.add("data_type != 'CORRECTION'")
    if query.trace_only:
        where.add("trace_id IS NOT NULL")
    if "name" not in covered:
        where.equals("name", "name", query.name)
    if "source" not in covered:
        where.equals("source", "source", query.source)
    if "dataType" not in covered:
        where.equals("data_type", "dataType", query.data_type)
    if "traceId" not in covered:
        where.equals("trace_id", "traceId", query.trace_id)
    if "sessionId" not in covered:
        where.equals("session_id", "sessionId", query.session_id)
    where.equals("config_id", "configId", query.config_id)
    where.equals("queue_id", "queueId", query.queue_id)
    where.equals("dataset_run_id", "datasetRunId", query.dataset_run_id)
    if "id" not in covered:
        where.any_of("id", "score_ids", query.score_ids)
    if "observationId" not in covered:
        where.any_of("observation_id", "obs_ids", query.observation_ids)
    if "environment" not in covered:
        where.any_of("environment", "envs", query.environments)
    _score_trace_filter(where, query, covered)
    if query.value is not None and "value" not in covered:
        where.add(f"value {query.value.operator} {{value:Float64}}", value=query.value.value)
    if "timestamp" not in covered:
        where.within("timestamp", query.timestamp)
    add_conditions(where, query.filters, SCORE_COLUMNS)
    return where


def _score_trace_filter(where: Filter, query: ScoreQuery, covered: frozenset[str]) -> None:
    """userId and traceTags select the scores' traces; with either, the trace's environment must be
    one asked for as well (as Langfuse)."""
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if query.user_id is not None and "userId" not in covered:
        clauses.append("user_id = {user:String}")
        params["user"] = query.user_id
    if query.trace_tags and "traceTags" not in covered:
        clauses.append("hasAll(tags, {trace_tags:Array(String)})")
        params["trace_tags"] = list(query.trace_tags)
    if clauses and query.environments and "environment" not in covered:
        clauses.append("environment IN {trace_envs:Array(String)}")
        params["trace_envs"] = list(query.environments)
    if clauses:
        traces = f"SELECT id FROM traces FINAL WHERE project_id = {{p:String}} AND {' AND '.join(clauses)}"
        where.add(f"trace_id IN ({traces})", **params)


def score_v3_filter(query: ScoreV3Query) -> Filter:
    where, covered = Filter(), _covered(query.filters)
    lists = (
        ("id", "id", "id", query.ids),
        ("name", "name", "name", query.names),
        ("source", "source", "source", query.sources),
        ("dataType", "data_type", "kind", query.data_types),
        ("environment", "environment", "env", query.environments),
        ("configId", "config_id", "config", query.config_ids),
        ("queueId", "queue_id", "queue", query.queue_ids),
        ("authorUserId", "author_user_id", "author", query.author_user_ids),
        ("traceId", "trace_id", "trace", query.trace_ids),
        ("sessionId", "session_id", "session", query.session_ids),
        ("observationId", "observation_id", "obs", query.observation_ids),
        ("datasetRunId", "dataset_run_id", "run", query.dataset_run_ids),
    )
    for column_id, column, key, values in lists:
        if column_id not in covered:
            where.any_of(column, key, values)
    if "value" not in covered:
        _score_values(where, query)
    if "timestamp" not in covered:
        where.within("timestamp", query.timestamp)
    add_conditions(where, query.filters, SCORE_COLUMNS)
    return where


def _score_values(where: Filter, query: ScoreV3Query) -> None:
    if query.values is not None and query.values.labels:
        where.add("string_value IN {values:Array(String)}", values=list(query.values.labels))
    elif query.values is not None:
        where.add("value IN {values:Array(Float64)}", values=list(query.values.numbers))
    if query.value_min is not None:
        where.add("value >= {value_min:Float64}", value_min=query.value_min)
    if query.value_max is not None:
        where.add("value <= {value_max:Float64}", value_max=query.value_max)


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


# --- the `filter` parameter ---------------------------------------------------------------------
ColumnType = Literal[
    "datetime",
    "string",
    "stringOptions",
    "categoryOptions",
    "arrayOptions",
    "number",
    "stringObject",
    "numberObject",
    "boolean",
]
# The filter types a column of each type takes (Langfuse's filterTypeCompatibility.ts).
COMPATIBLE: dict[ColumnType, tuple[FilterType, ...]] = {
    "string": ("string", "stringOptions"),
    "stringOptions": ("string", "stringOptions"),
    "arrayOptions": ("arrayOptions", "stringOptions"),
    "datetime": ("datetime",),
    "number": ("number",),
    "boolean": ("boolean",),
    "stringObject": ("stringObject",),
    "numberObject": ("numberObject",),
    "categoryOptions": ("categoryOptions", "stringOptions"),
}


@dataclass(frozen=True)
class Related:
    """A column of another table, reached by a semi-join: `local IN (SELECT remote FROM table ...)`.

    `group`: the column aggregates all related rows of one key (the condition goes to HAVING).
    `exists`: a row has many related rows and matches when any of them does; "none of" then means
    that none of them does. `missing`: the value a row without related rows compares as (what
    Langfuse's LEFT JOIN gives it); None when such rows never match."""

    local: str
    table: str
    remote: str
    where: str = ""
    group: bool = False
    exists: bool = False
    missing: str | None = None


@dataclass(frozen=True)
class FilterColumn:
    id: str
    type: ColumnType
    sql: str
    names: tuple[str, ...] = ()  # the other names it answers to (Langfuse's UI names and aliases)
    also: tuple[FilterType, ...] = ()  # filter types it takes beyond its type's
    empty: bool = False  # "no value" is stored as '' / [] / {} rather than NULL
    related: Related | None = None
    refused: str | None = None  # a column Langfuse filters on that tracehouse cannot: why

    @property
    def accepts(self) -> tuple[FilterType, ...]:
        one_value = self.related is None or not self.related.exists
        return (*COMPATIBLE[self.type], *self.also, *(("null",) if one_value else ()))


class FilterColumns:
    """The columns one route's `filter` may name, found by id or by any of their names."""

    def __init__(self, *columns: FilterColumn) -> None:
        self.by_id = {column.id: column for column in columns}
        self._by_name = {name: column for column in columns for name in (column.id, *column.names)}

    def find(self, name: str) -> FilterColumn | None:
        return self._by_name.get(name)

    @property
    def ids(self) -> list[str]:
        return [column.id for column in self.by_id.values() if column.refused is None]


def add_conditions(where: Filter, conditions: Conditions, columns: FilterColumns) -> None:
    for condition in conditions:
        where.add(_predicate(where, columns.by_id[condition.column], condition))


def _predicate(where: Filter, column: FilterColumn, condition: FilterCondition) -> str:
    related = column.related
    if related is None:
        return _test(where, column, column.sql, condition)
    source = f"SELECT {related.remote} FROM {related.table} FINAL WHERE project_id = {{p:String}}"
    if related.where:
        source += f" AND {related.where}"
    if related.exists:
        negative = condition.operator == "none of"
        test = _test(where, column, column.sql, replace(condition, operator="any of") if negative else condition)
        return f"{related.local} {'NOT IN' if negative else 'IN'} ({source} AND {test})"
    test = _test(where, column, column.sql, condition)
    if related.group:
        matched = f"{related.local} IN ({source} GROUP BY {related.remote} HAVING {test})"
    else:
        matched = f"{related.local} IN ({source} AND {test})"
    if related.missing is None:
        return matched
    without = f"(isNull({related.local}) OR {related.local} NOT IN ({source}))"
    return f"({matched} OR ({without} AND {_test(where, column, related.missing, condition)}))"


def _test(where: Filter, column: FilterColumn, expr: str, condition: FilterCondition) -> str:
    """The condition on one value, `expr` (the column's expression, or the value of a missing row)."""
    kind, op, value = condition.type, condition.operator, condition.value
    if kind == "null":
        absent = f"empty({expr})" if column.empty else f"isNull({expr})"
        return absent if op == "is null" else f"NOT {absent}"
    if kind == "string":
        return _string(where, expr, op, value)
    if kind == "stringObject":
        return _keyed_string(where, expr, condition)
    if kind in ("stringOptions", "arrayOptions", "categoryOptions"):
        return _options(where, column, expr, condition)
    if kind in ("number", "numberObject"):
        number = where.bind(value, "Float64")
        if kind == "number":
            return f"toFloat64({expr}) {op} {number}"
        key = where.bind(condition.key, "String")
        if column.type == "stringObject":  # a metadata value read as a number
            return f"toFloat64OrNull({expr}[{key}]) {op} {number}"
        return f"name = {key} AND toFloat64({expr}) {op} {number}"  # a score's value by the score's name
    if kind == "datetime":
        assert isinstance(value, datetime)
        return f"{expr} {op} {where.bind(ch_time(value), 'DateTime64(3)')}"
    # boolean
    return f"toUInt8({expr}) {'=' if op == '=' else '!='} {where.bind(int(bool(value)), 'UInt8')}"


_STRING_TESTS = {
    "=": "{e} = {v}",
    "contains": "position({e}, {v}) > 0",
    "does not contain": "position({e}, {v}) = 0",
    "starts with": "startsWith({e}, {v})",
    "ends with": "endsWith({e}, {v})",
}


def _string(where: Filter, expr: str, op: str, value: Any) -> str:
    if op == "is not empty":
        return f"notEmpty(ifNull({expr}, ''))"
    return _STRING_TESTS[op].format(e=expr, v=where.bind(value, "String"))


def _keyed_string(where: Filter, expr: str, condition: FilterCondition) -> str:
    """A metadata value by key. A key the row lacks reads as '' (Map semantics, as Langfuse)."""
    key = where.bind(condition.key, "String")
    if condition.operator in ("is set", "is not set"):
        has = f"mapContains({expr}, {key})"
        return has if condition.operator == "is set" else f"NOT {has}"
    return _string(where, f"{expr}[{key}]", condition.operator, condition.value)


def _options(where: Filter, column: FilterColumn, expr: str, condition: FilterCondition) -> str:
    values = list(condition.value) if isinstance(condition.value, tuple) else []
    op = condition.operator
    if condition.type == "categoryOptions" and column.type == "stringObject":  # metadata[key] among the values
        key = where.bind(condition.key, "String")
        test = f"(mapContains({expr}, {key}) AND {expr}[{key}] IN {where.bind(values, 'Array(String)')})"
        return test if op == "any of" else f"NOT {test}"
    if condition.type == "categoryOptions":  # score categories are `name:label`
        values = [f"{condition.key}:{label}" for label in values]
    bound = where.bind(values, "Array(String)")
    if column.type == "arrayOptions":
        if op == "all of":
            return f"hasAll({expr}, {bound})"
        return f"hasAny({expr}, {bound})" if op == "any of" else f"NOT hasAny({expr}, {bound})"
    return f"{expr} IN {bound}" if op == "any of" else f"{expr} NOT IN {bound}"


def _keys_sum(column: str, needle: str) -> str:
    """The sum of a usage/cost map's values whose key contains `needle` (how the views compute them)."""
    return f"arraySum(mapValues(mapFilter((k, v) -> position(k, '{needle}') > 0, {column})))"


def _keys_sum_or_null(column: str, needle: str) -> str:
    return f"if(empty(mapFilter((k, v) -> position(k, '{needle}') > 0, {column})), NULL, {_keys_sum(column, needle)})"


_NULL_TEXT = "CAST(NULL AS Nullable(String))"
_NO_TAGS = "CAST([] AS Array(String))"
_NO_COMMENTS = "tracehouse stores no comments"

# A trace's observations, aggregated; a trace without observations compares as 0 ('' for level).
_TRACE_OBSERVATIONS = Related("id", "observations", "trace_id", group=True, missing="0")
_TRACE_SCORES = "trace_id IS NOT NULL AND session_id IS NULL AND dataset_run_id IS NULL"
_TRACE_LEVEL = (
    "multiIf(countIf(level = 'ERROR') > 0, 'ERROR', countIf(level = 'WARNING') > 0, 'WARNING', "
    "countIf(level = 'DEFAULT') > 0, 'DEFAULT', 'DEBUG')"
)
# As the trace list computes latency and totalCost.
_TRACE_LATENCY = (
    "date_diff('millisecond', min(start_time), max(greatest(start_time, coalesce(end_time, start_time)))) / 1000"
)


def _level_count(level: str, name: str) -> FilterColumn:
    return FilterColumn(
        f"{level.lower()}Count", "number", f"countIf(level = '{level}')", names=(name,), related=_TRACE_OBSERVATIONS
    )


TRACE_COLUMNS = FilterColumns(
    FilterColumn("id", "string", "id", names=("ID",)),
    FilterColumn("name", "stringOptions", "name", names=("Name", "traceName"), empty=True),
    FilterColumn("timestamp", "datetime", "timestamp", names=("Timestamp",)),
    FilterColumn("userId", "string", "user_id", names=("User ID",)),
    FilterColumn("sessionId", "string", "session_id", names=("Session ID",)),
    FilterColumn("metadata", "stringObject", "metadata", names=("Metadata",), empty=True),
    FilterColumn("version", "string", "version", names=("Version",)),
    FilterColumn("release", "string", "release", names=("Release",)),
    FilterColumn("environment", "stringOptions", "environment", names=("Environment",)),
    FilterColumn("tags", "arrayOptions", "tags", names=("Tags", "traceTags"), empty=True),
    FilterColumn("bookmarked", "boolean", "bookmarked", names=("⭐️",)),
    FilterColumn(
        "level", "stringOptions", _TRACE_LEVEL, names=("Level",), related=replace(_TRACE_OBSERVATIONS, missing="''")
    ),
    _level_count("ERROR", "Error Level Count"),
    _level_count("WARNING", "Warning Level Count"),
    _level_count("DEFAULT", "Default Level Count"),
    _level_count("DEBUG", "Debug Level Count"),
    FilterColumn(
        "inputTokens",
        "number",
        f"sum({_keys_sum('usage_details', 'input')})",
        names=("Input Tokens",),
        related=_TRACE_OBSERVATIONS,
    ),
    FilterColumn(
        "outputTokens",
        "number",
        f"sum({_keys_sum('usage_details', 'output')})",
        names=("Output Tokens",),
        related=_TRACE_OBSERVATIONS,
    ),
    FilterColumn(
        "totalTokens",
        "number",
        "sum(usage_details['total'])",
        names=("Total Tokens", "tokens", "Tokens"),
        related=_TRACE_OBSERVATIONS,
    ),
    FilterColumn("latency", "number", _TRACE_LATENCY, names=("Latency (s)",), related=_TRACE_OBSERVATIONS),
    FilterColumn(
        "inputCost",
        "number",
        f"sum({_keys_sum('cost_details', 'input')})",
        names=("Input Cost ($)",),
        related=_TRACE_OBSERVATIONS,
    ),
    FilterColumn(
        "outputCost",
        "number",
        f"sum({_keys_sum('cost_details', 'output')})",
        names=("Output Cost ($)",),
        related=_TRACE_OBSERVATIONS,
    ),
    FilterColumn(
        "totalCost", "number", "ifNull(sum(total_cost), 0)", names=("Total Cost ($)",), related=_TRACE_OBSERVATIONS
    ),
    FilterColumn(
        "scores_avg",
        "numberObject",
        "value",
        names=("Scores", "Scores (numeric)", "scores"),
        related=Related(
            "id", "scores", "trace_id", f"{_TRACE_SCORES} AND data_type IN ('NUMERIC', 'BOOLEAN')", exists=True
        ),
    ),
    FilterColumn(
        "score_categories",
        "categoryOptions",
        "concat(name, ':', string_value)",
        names=("Scores (categorical)",),
        related=Related(
            "id",
            "scores",
            "trace_id",
            f"{_TRACE_SCORES} AND data_type = 'CATEGORICAL' AND notEmpty(string_value)",
            exists=True,
        ),
    ),
    FilterColumn("commentCount", "number", "", names=("Comment Count",), refused=_NO_COMMENTS),
    FilterColumn("commentContent", "string", "", names=("Comment Content",), refused=_NO_COMMENTS),
)

# An observation's trace (an observation whose trace is not stored compares as Langfuse's LEFT JOIN
# defaults: '' names, null ids, no tags).
_OBSERVATION_TRACE = Related("trace_id", "traces", "id")
_OBSERVATION_SCORES = "observation_id IS NOT NULL"
# As the v2 view reports totalCost: the stored total, else the cost map's `total`.
_OBSERVATION_TOTAL_COST = "if(ifNull(total_cost, 0) != 0, total_cost, cost_details['total'])"
_OBSERVATION_LATENCY = "if(isNull(end_time), NULL, date_diff('millisecond', start_time, end_time) / 1000)"
_OBSERVATION_TTFT = (
    "if(isNull(completion_start_time), NULL, date_diff('millisecond', start_time, completion_start_time) / 1000)"
)
_OBSERVATION_TOKENS_PER_SECOND = (
    f"if(isNull(end_time) OR end_time = start_time, NULL, {_keys_sum('usage_details', 'output')} "
    "/ (date_diff('millisecond', start_time, end_time) / 1000))"
)

OBSERVATION_COLUMNS = FilterColumns(
    FilterColumn("id", "string", "id", names=("ID",)),
    FilterColumn("type", "stringOptions", "type", names=("Type",)),
    FilterColumn("name", "stringOptions", "name", names=("Name",), empty=True),
    FilterColumn("traceId", "string", "trace_id", names=("Trace ID",)),
    FilterColumn("startTime", "datetime", "start_time", names=("Start Time",)),
    FilterColumn("endTime", "datetime", "end_time", names=("End Time",)),
    FilterColumn("environment", "stringOptions", "environment", names=("Environment",)),
    FilterColumn("level", "stringOptions", "level", names=("Level",)),
    FilterColumn("statusMessage", "string", "status_message", names=("Status Message",)),
    FilterColumn("version", "string", "version", names=("Version",)),
    FilterColumn("isRootObservation", "boolean", "isNull(parent_observation_id)"),
    FilterColumn("model", "stringOptions", "provided_model_name", names=("Model", "providedModelName")),
    FilterColumn("modelId", "stringOptions", "internal_model_id", names=("Model ID",)),
    FilterColumn("promptName", "stringOptions", "prompt_name", names=("Prompt Name",)),
    FilterColumn("promptVersion", "number", "prompt_version", names=("Prompt Version",)),
    FilterColumn("input", "string", "input", names=("Input",)),
    FilterColumn("output", "string", "output", names=("Output",)),
    FilterColumn(
        "metadata",
        "stringObject",
        "metadata",
        names=("Metadata",),
        also=("numberObject", "categoryOptions"),
        empty=True,
    ),
    FilterColumn("latency", "number", _OBSERVATION_LATENCY, names=("Latency (s)",)),
    FilterColumn("timeToFirstToken", "number", _OBSERVATION_TTFT, names=("Time To First Token (s)",)),
    FilterColumn("tokensPerSecond", "number", _OBSERVATION_TOKENS_PER_SECOND, names=("Tokens per second",)),
    FilterColumn("inputTokens", "number", _keys_sum("usage_details", "input"), names=("Input Tokens",)),
    FilterColumn("outputTokens", "number", _keys_sum("usage_details", "output"), names=("Output Tokens",)),
    FilterColumn(
        "totalTokens", "number", "usage_details['total']", names=("Total Tokens", "tokens", "Tokens", "usage", "Usage")
    ),
    FilterColumn("inputCost", "number", _keys_sum_or_null("cost_details", "input"), names=("Input Cost ($)",)),
    FilterColumn("outputCost", "number", _keys_sum_or_null("cost_details", "output"), names=("Output Cost ($)",)),
    FilterColumn("totalCost", "number", _OBSERVATION_TOTAL_COST, names=("Total Cost ($)",)),
    FilterColumn(
        "traceName",
        "stringOptions",
        "name",
        names=("Trace Name",),
        empty=True,
        related=replace(_OBSERVATION_TRACE, missing="''"),
    ),
    FilterColumn(
        "userId", "string", "user_id", names=("User ID",), related=replace(_OBSERVATION_TRACE, missing=_NULL_TEXT)
    ),
    FilterColumn(
        "sessionId",
        "string",
        "session_id",
        names=("Session ID",),
        related=replace(_OBSERVATION_TRACE, missing=_NULL_TEXT),
    ),
    FilterColumn(
        "traceTags",
        "arrayOptions",
        "tags",
        names=("Trace Tags", "tags"),
        empty=True,
        related=replace(_OBSERVATION_TRACE, missing=_NO_TAGS),
    ),
    FilterColumn(
        "scores_avg",
        "numberObject",
        "value",
        names=("Scores", "Scores (numeric)", "scores"),
        related=Related(
            "id",
            "scores",
            "observation_id",
            f"{_OBSERVATION_SCORES} AND data_type IN ('NUMERIC', 'BOOLEAN')",
            exists=True,
        ),
    ),
    FilterColumn(
        "score_categories",
        "categoryOptions",
        "concat(name, ':', string_value)",
        names=("Scores (categorical)",),
        related=Related(
            "id",
            "scores",
            "observation_id",
            f"{_OBSERVATION_SCORES} AND data_type = 'CATEGORICAL' AND notEmpty(string_value)",
            exists=True,
        ),
    ),
)

# A score's trace (a score without a stored trace compares as Langfuse's LEFT JOIN defaults).
_SCORE_TRACE = Related("trace_id", "traces", "id")

SCORE_COLUMNS = FilterColumns(
    FilterColumn("id", "string", "id", names=("ID",)),
    FilterColumn("timestamp", "datetime", "timestamp", names=("Timestamp",)),
    FilterColumn("environment", "stringOptions", "environment", names=("Environment",)),
    FilterColumn("traceId", "string", "trace_id", names=("Trace ID",)),
    FilterColumn("observationId", "string", "observation_id", names=("Observation ID",)),
    FilterColumn("sessionId", "string", "session_id", names=("Session ID",)),
    FilterColumn("name", "stringOptions", "name", names=("Name",)),
    FilterColumn("value", "number", "value", names=("Value",)),
    FilterColumn("source", "stringOptions", "source", names=("Source",)),
    FilterColumn("comment", "string", "comment", names=("Comment",)),
    FilterColumn("authorUserId", "string", "author_user_id", names=("Author User ID",)),
    FilterColumn("dataType", "stringOptions", "data_type", names=("Data Type",)),
    FilterColumn("stringValue", "stringOptions", "string_value", names=("String Value",)),
    FilterColumn(
        "traceName",
        "stringOptions",
        "name",
        names=("Trace Name",),
        empty=True,
        related=replace(_SCORE_TRACE, missing="''"),
    ),
    FilterColumn(
        "userId", "stringOptions", "user_id", names=("User ID",), related=replace(_SCORE_TRACE, missing=_NULL_TEXT)
    ),
    FilterColumn(
        "traceTags",
        "arrayOptions",
        "tags",
        names=("Trace Tags", "trace_tags", "tags"),
        empty=True,
        related=replace(_SCORE_TRACE, missing=_NO_TAGS),
    ),
)
