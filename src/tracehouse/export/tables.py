"""What each exported table contains and the query that reads one window of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracehouse.clickhouse import catalog
from tracehouse.export.windows import ExportWindow


@dataclass(frozen=True)
class ExportTable:
    name: str
    columns: tuple[str, ...]
    # The table's sorting key after project_id: reading in this order streams straight from the
    # parts (no sort of the whole window in memory), and all versions of a row sit side by side.
    read_order: tuple[str, ...]
    version_column: str  # windows are cut over it: the moment a row version was written

    def window_query(self) -> str:
        """Newest version of each id written in the window, tombstones included.

        Deleted rows are exported (with `is_deleted = 1`) rather than filtered out: a reader that keeps
        the newest version per id then drops a deleted row, instead of keeping an older live version.
        """
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name} "
            "WHERE project_id = {project_id:String} "
            f"AND {self.version_column} >= fromUnixTimestamp64Milli({{start_ms:Int64}}) "
            f"AND {self.version_column} < fromUnixTimestamp64Milli({{end_ms:Int64}}) "
            f"ORDER BY {', '.join(self.read_order)}, {self.version_column} DESC LIMIT 1 BY id"
        )


def window_params(project_id: str, window: ExportWindow) -> dict[str, Any]:
    return {"project_id": project_id, "start_ms": window.start_ms, "end_ms": window.end_ms}


def _exported(name: str, langfuse_columns: tuple[str, ...]) -> ExportTable:
    """The export of catalogued table `name`: Langfuse's columns, then the version columns."""
    table = catalog.table(name)
    versions = tuple(c for c in (table.version_column, table.is_deleted_column) if c is not None)
    columns = table.columns_named(langfuse_columns + versions)  # an unknown name fails at import
    project, *read_order = table.sorting_key
    if project != "project_id":
        raise ValueError(f"{name} is not sorted by project first: a window query would scan every project")
    return ExportTable(name, tuple(c.name for c in columns), tuple(read_order), table.version_column)


# Langfuse's exported columns (the fork's list); `_exported` adds the version columns readers need
# to reduce the files to the current state.
TABLES: dict[str, ExportTable] = {
    t.name: t
    for t in [
        _exported(
            "scores",
            (
                "id",
                "timestamp",
                "project_id",
                "environment",
                "trace_id",
                "observation_id",
                "session_id",
                "name",
                "value",
                "source",
                "comment",
                "data_type",
                "string_value",
                "metadata",
            ),
        ),
        _exported(
            "traces",
            (
                "id",
                "timestamp",
                "name",
                "environment",
                "project_id",
                "metadata",
                "user_id",
                "session_id",
                "release",
                "version",
                "public",
                "bookmarked",
                "tags",
                "input",
                "output",
            ),
        ),
        _exported(
            "observations",
            (
                "id",
                "trace_id",
                "project_id",
                "environment",
                "type",
                "parent_observation_id",
                "start_time",
                "end_time",
                "name",
                "metadata",
                "level",
                "status_message",
                "version",
                "input",
                "output",
                "provided_model_name",
                "model_parameters",
                "usage_details",
                "cost_details",
                "total_cost",
                "completion_start_time",
                "prompt_name",
                "prompt_version",
            ),
        ),
    ]
}


def tables_for(project_id: str, trace_only_projects: frozenset[str]) -> list[ExportTable]:
    """The fork's order: scores, traces, observations; traces only for trace-only projects."""
    if project_id in trace_only_projects:
        return [TABLES["traces"]]
    return [TABLES["scores"], TABLES["traces"], TABLES["observations"]]


def first_row_query(tables: list[ExportTable]) -> str:
    """Earliest version (event_ts, epoch ms) at or after `after_ms` per table, with the count of such rows."""
    return " UNION ALL ".join(
        f"SELECT toUnixTimestamp64Milli(min({t.version_column})) AS first, count() AS n FROM {t.name} "
        "WHERE project_id = {project_id:String} "
        f"AND {t.version_column} >= fromUnixTimestamp64Milli({{after_ms:Int64}})"
        for t in tables
    )
