"""The SQL of one batch export: the read API's rows for a filter, as of the export's creation.

**Which rows.** The WHERE clause is the read API's own (`tracehouse.queries.sql`), built from the
same query object, so an export selects what the list route selects. **As of when.** The read API
reads each table with `FINAL` (the newest version per id, tombstones dropped). An export reads
instead the newest version per id with `event_ts <= createdAt`, and drops ids whose newest such
version is a tombstone (`is_deleted = 1`): rows written after the export was created are not in
it, rows deleted before are not in it, and a row updated afterwards is in it as it was. Every
table the filter reads (a trace's user for observations, a score's trace tags, ...) is pinned to
the same moment, so the whole query sees one consistent state.

The versions of a row share its sort key (the time column is immutable), so reading in sort-key
order with `event_ts DESC` and `LIMIT 1 BY id` picks the newest version while streaming from the
parts; the result is then sorted in the list's order.

**In time ranges.** Sorting the whole export at once would hold it all in memory: embedded chDB
does not spill sorts to disk (`max_bytes_before_external_sort` is accepted but has no effect; a
real ClickHouse server spills past `SPILL_BYTES`). When the list's order leads with the table's
time column (the default of every table but sessions), the export is read instead as a sequence
of time ranges, each sorted on its own and concatenated in order: one range per day (the sort
key's date prefix, so each range reads only its own parts' granules, and every row is read
once), and a day holding more than `RANGE_ROWS` rows is cut into ranges of whole hours. Memory
then follows the largest range, not the export. Other orders (traces by name, ...) and sessions
are one sorted query.

**What each row holds.** The fields of the list route's items that the row itself holds, named and
valued as the read API answers them (traces as GET /api/public/traces, observations as v1
/api/public/observations, scores as /api/public/v2/scores, sessions as /api/public/sessions).
Fields the API computes from other tables or from the current price list (a trace's observation
and score ids, latency and cost; an observation's matched model prices; a score's `trace` object)
are not exported: they are not the row's data, and the price list is not pinned to the snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tracehouse.batch_export.filters import Query
from tracehouse.batch_export.models import TableName
from tracehouse.clickhouse import catalog
from tracehouse.queries.models import ObservationQuery, ScoreQuery, SessionQuery, TraceOrder, TraceQuery
from tracehouse.queries.sql import (
    Filter,
    observation_filter,
    score_filter,
    sessions_source,
    trace_filter,
    trace_order,
)
from tracehouse.timefmt import ch_time

AS_OF = "batch_export_as_of"  # the snapshot moment's parameter (not a name the read API binds)
RANGE_FROM, RANGE_TO = "batch_export_from", "batch_export_to"  # one time range's bounds, [from, to)
RANGE_ROWS = 100_000  # a day with more rows than this is exported in ranges of whole hours
SPILL_BYTES = 256 * 1024 * 1024  # sorts and groupings past this go to disk: memory stays flat
PINNED_TABLES = ("traces", "observations", "scores")


class Kind(StrEnum):
    """How a column is presented in the text formats."""

    PLAIN = "plain"
    TIME = "time"  # Langfuse's 2026-11-01T12:00:00.000Z
    JSON = "json"  # stored JSON text (or plain text): parsed in JSON/JSONL, as stored in CSV
    METADATA = "metadata"  # a map of stored JSON texts: each value parsed, as the API does


@dataclass(frozen=True)
class Column:
    name: str  # the read API's field name
    sql: str
    kind: Kind = Kind.PLAIN


def _c(name: str, sql: str | None = None, kind: Kind = Kind.PLAIN) -> Column:
    return Column(name, sql or name, kind)


def _keys_sum(column: str, needle: str, cast: str) -> str:
    return f"arraySum(mapValues(mapFilter((k, v) -> position(k, '{needle}') > 0, CAST({column}, '{cast}'))))"


def _keys_sum_or_null(column: str, needle: str) -> str:
    has = f"notEmpty(mapFilter((k, v) -> position(k, '{needle}') > 0, {column}))"
    return f"if({has}, {_keys_sum(column, needle, 'Map(String, Float64)')}, NULL)"


def _seconds_between(start: str, end: str) -> str:
    return f"if(isNull({end}), NULL, date_diff('millisecond', {start}, {end}) / 1000)"


T, J, M = Kind.TIME, Kind.JSON, Kind.METADATA
COLUMNS: dict[TableName, tuple[Column, ...]] = {
    TableName.TRACES: (
        _c("id"),
        _c("timestamp", kind=T),
        _c("name", "nullIf(name, '')"),
        _c("userId", "user_id"),
        _c("release"),
        _c("version"),
        _c("projectId", "project_id"),
        _c("environment"),
        _c("public"),
        _c("bookmarked"),
        _c("tags"),
        _c("sessionId", "session_id"),
        _c("metadata", kind=M),
        _c("input", kind=J),
        _c("output", kind=J),
        _c("createdAt", "created_at", T),
        _c("updatedAt", "updated_at", T),
        _c("htmlPath", "concat('/project/', project_id, '/traces/', id)"),
    ),
    TableName.OBSERVATIONS: (
        _c("id"),
        _c("projectId", "project_id"),
        _c("traceId", "trace_id"),
        _c("parentObservationId", "parent_observation_id"),
        _c("name", "nullIf(name, '')"),
        _c("type"),
        _c("environment"),
        _c("startTime", "start_time", T),
        _c("endTime", "end_time", T),
        _c("version"),
        _c("createdAt", "created_at", T),
        _c("updatedAt", "updated_at", T),
        _c("input", kind=J),
        _c("output", kind=J),
        _c("metadata", kind=M),
        _c("level"),
        _c("statusMessage", "status_message"),
        _c("model", "provided_model_name"),
        # As the API: no (or empty) parameters read as {}.
        _c("modelParameters", "if(empty(ifNull(model_parameters, '')), '{}', model_parameters)", J),
        _c("completionStartTime", "completion_start_time", T),
        _c("promptId", "prompt_id"),
        _c("promptName", "prompt_name"),
        _c("promptVersion", "prompt_version"),
        _c("usageDetails", "CAST(usage_details, 'Map(String, UInt64)')"),
        _c("costDetails", "CAST(cost_details, 'Map(String, Float64)')"),
        _c("unit", "'TOKENS'"),
        _c("promptTokens", _keys_sum("usage_details", "input", "Map(String, UInt64)")),
        _c("completionTokens", _keys_sum("usage_details", "output", "Map(String, UInt64)")),
        _c("totalTokens", "usage_details['total']"),
        _c("usagePricingTierName", "usage_pricing_tier_name"),
        _c("usagePricingTierId", "usage_pricing_tier_id"),
        _c("calculatedInputCost", _keys_sum_or_null("cost_details", "input")),
        _c("calculatedOutputCost", _keys_sum_or_null("cost_details", "output")),
        _c("calculatedTotalCost", "toFloat64(if(ifNull(total_cost, 0) != 0, total_cost, cost_details['total']))"),
        _c("latency", _seconds_between("start_time", "end_time")),
        _c("timeToFirstToken", _seconds_between("start_time", "completion_start_time")),
    ),
    TableName.SCORES: (
        _c("id"),
        _c("projectId", "project_id"),
        _c("environment"),
        _c("name"),
        _c("value", "if(data_type = 'TEXT', NULL, value)"),  # TEXT scores have no value
        _c("source"),
        _c("authorUserId", "author_user_id"),
        _c("comment"),
        _c("metadata", kind=M),
        _c("configId", "config_id"),
        _c("queueId", "queue_id"),
        _c("executionTraceId", "execution_trace_id"),
        _c("createdAt", "created_at", T),
        _c("updatedAt", "updated_at", T),
        _c("timestamp", kind=T),
        _c("traceId", "trace_id"),
        _c("observationId", "observation_id"),
        _c("sessionId", "session_id"),
        _c("datasetRunId", "dataset_run_id"),
        _c("dataType", "data_type"),
        _c("stringValue", "if(data_type = 'CORRECTION', long_string_value, string_value)"),
    ),
    TableName.SESSIONS: (
        _c("id"),
        _c("createdAt", "created_at", T),
        _c("projectId", "{p:String}"),
        _c("environment", "session_env"),
    ),
}
# The list routes' orders (traces: the requested one).
_ORDER = {
    TableName.OBSERVATIONS: "start_time DESC, id",
    TableName.SCORES: "timestamp DESC, id",
    TableName.SESSIONS: "created_at DESC, id",
}


@dataclass(frozen=True)
class ExportSql:
    rows: str  # the rows in order (of one time range when `hours` is set); columns c0, c1, ...
    count: str  # how many rows the whole export holds
    params: dict[str, Any]
    columns: tuple[Column, ...]
    hours: str | None = None  # rows per hour (h: Unix seconds, n), when the export is read in time ranges
    descending: bool = True  # the order of the time ranges

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime  # exclusive
    rows: int

    def params(self) -> dict[str, str]:
        return {RANGE_FROM: ch_time(self.start), RANGE_TO: ch_time(self.end)}


# The time column each table's list order leads with (sessions are grouped: one query).
TIME_COLUMNS = {TableName.TRACES: "timestamp", TableName.OBSERVATIONS: "start_time", TableName.SCORES: "timestamp"}


def export_sql(table: TableName, query: Query, order: TraceOrder | None, project_id: str, as_of: datetime) -> ExportSql:
    where, source, order_by = _source(table, query, order)
    params = {**where.params, "p": project_id, AS_OF: ch_time(as_of)}
    columns = COLUMNS[table]
    select = ", ".join(f"{c.sql} AS c{i}" for i, c in enumerate(columns))
    whole = pin_to_snapshot(f"FROM {source} WHERE {where.sql}")
    time_column = TIME_COLUMNS.get(table)
    if time_column is None or not order_by.startswith(f"{time_column} "):
        return ExportSql(
            f"SELECT {select} {whole} ORDER BY {order_by}", f"SELECT count() AS n {whole}", params, columns
        )
    # The range goes into the main table's snapshot (the filter's other tables are read whole).
    ranged = pin_to_snapshot(f"FROM {_pinned(table, time_column)} WHERE {where.sql}")
    return ExportSql(
        rows=f"SELECT {select} {ranged} ORDER BY {order_by}",
        count=f"SELECT count() AS n {whole}",
        params=params,
        columns=columns,
        hours=f"SELECT toUnixTimestamp(toStartOfHour({table}.{time_column})) AS h, count() AS n {whole} GROUP BY h",
        descending=order_by.startswith(f"{time_column} DESC"),
    )


def plan_ranges(hours: list[tuple[datetime, int]], descending: bool, range_rows: int = RANGE_ROWS) -> list[TimeRange]:
    """Time ranges in the export's order: one per day, a day above `range_rows` in whole hours
    packed up to `range_rows` (an hour above it stands alone). `hours`: (hour start, rows)."""
    days: dict[datetime, list[tuple[datetime, int]]] = {}
    for hour, n in sorted(hours):
        days.setdefault(hour.replace(hour=0), []).append((hour, n))
    ranges: list[TimeRange] = []
    for day, counts in days.items():
        if sum(n for _, n in counts) <= range_rows:
            ranges.append(TimeRange(day, day + timedelta(days=1), sum(n for _, n in counts)))
            continue
        start, rows = counts[0][0], 0
        for hour, n in counts:
            if rows and rows + n > range_rows:
                ranges.append(TimeRange(start, hour, rows))
                start, rows = hour, 0
            rows += n
        ranges.append(TimeRange(start, counts[-1][0] + timedelta(hours=1), rows))
    return ranges[::-1] if descending else ranges


def query_settings() -> dict[str, Any]:
    """Added to the export workload class's settings: large sorts and groupings spill to disk."""
    return {"max_bytes_before_external_sort": SPILL_BYTES, "max_bytes_before_external_group_by": SPILL_BYTES}


def _source(table: TableName, query: Query, order: TraceOrder | None) -> tuple[Filter, str, str]:
    if table is TableName.TRACES:
        assert isinstance(query, TraceQuery)
        return trace_filter(query), "traces FINAL", trace_order(order or TraceOrder())
    if table is TableName.OBSERVATIONS:
        assert isinstance(query, ObservationQuery)
        return observation_filter(query), "observations FINAL", _ORDER[table]
    if table is TableName.SCORES:
        assert isinstance(query, ScoreQuery)
        return score_filter(query), "scores FINAL", _ORDER[table]
    assert isinstance(query, SessionQuery)
    grouped, where = sessions_source(query)
    return where, f"({grouped}) AS sessions", _ORDER[table]


def snapshot(table: str, time_column: str | None = None) -> str:
    """The newest version of each id of the project written at or before the snapshot moment
    (with `time_column`: of the ids whose time lies in the range [RANGE_FROM, RANGE_TO))."""
    spec = catalog.table(table)
    order = ", ".join((*spec.sorting_key[1:], f"{spec.version_column} DESC"))
    in_range = (
        f"AND {time_column} >= {{{RANGE_FROM}:DateTime64(3)}} AND {time_column} < {{{RANGE_TO}:DateTime64(3)}} "
        if time_column
        else ""
    )
    return (
        f"SELECT * FROM {table} WHERE project_id = {{p:String}} {in_range}"
        f"AND {spec.version_column} <= {{{AS_OF}:DateTime64(3)}} ORDER BY {order} LIMIT 1 BY id"
    )


def _pinned(table: str, time_column: str | None = None) -> str:
    return f"(SELECT * FROM ({snapshot(table, time_column)}) WHERE is_deleted = 0) AS {table}"


def pin_to_snapshot(sql: str) -> str:
    """Every `<table> FINAL` the read API's SQL reads becomes that table as of the snapshot (its
    live rows: a tombstone as the newest version hides the id, as FINAL does)."""
    for table in PINNED_TABLES:
        sql = sql.replace(f"{table} FINAL", _pinned(table))
    if "FINAL" in sql:  # a read of some other table: it would not be pinned, so refuse to guess
        raise ValueError(f"the export query reads a table it cannot pin to its snapshot: {sql[:300]}")
    return sql
