"""What each exported table contains and the query that reads one window of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracehouse.export.windows import ExportWindow


@dataclass(frozen=True)
class ExportTable:
    name: str
    columns: tuple[str, ...]
    # The table's sorting key after project_id: reading in this order streams straight from the
    # parts (no sort of the whole window in memory), and all versions of a row sit side by side.
    read_order: tuple[str, ...]

    def window_query(self) -> str:
        """Newest version of each id written in the window, tombstones included.

        Deleted rows are exported (with `is_deleted = 1`) rather than filtered out: a reader that keeps
        the newest version per id then drops a deleted row, instead of keeping an older live version.
        """
        return (
            f"SELECT {', '.join(self.columns)} FROM {self.name} "
            "WHERE project_id = {project_id:String} "
            "AND event_ts >= fromUnixTimestamp64Milli({start_ms:Int64}) "
            "AND event_ts < fromUnixTimestamp64Milli({end_ms:Int64}) "
            f"ORDER BY {', '.join(self.read_order)}, event_ts DESC LIMIT 1 BY id"
        )


def window_params(project_id: str, window: ExportWindow) -> dict[str, Any]:
    return {"project_id": project_id, "start_ms": window.start_ms, "end_ms": window.end_ms}


_VERSION = ("event_ts", "is_deleted")

# Langfuse's exported columns (the fork's list), plus the version columns readers need to reduce
# the files to the current state.
TABLES: dict[str, ExportTable] = {
    t.name: t
    for t in [
        ExportTable(
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
                *_VERSION,
            ),
            ("toDate(timestamp)", "name", "id"),
        ),
        ExportTable(
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
                *_VERSION,
            ),
            ("toDate(timestamp)", "id"),
        ),
        ExportTable(
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
                *_VERSION,
            ),
            ("type", "toDate(start_time)", "id"),
        ),
    ]
}


def tables_for(project_id: str, trace_only_projects: frozenset[str]) -> list[ExportTable]:
    """The fork's order: scores, traces, observations; traces only for trace-only projects."""
    if project_id in trace_only_projects:
        return [TABLES["traces"]]
    return [TABLES["scores"], TABLES["traces"], TABLES["observations"]]


def first_row_query(tables: list[ExportTable]) -> str:
    """Earliest event_ts (epoch ms) at or after `after_ms` per table, with the count of such rows."""
    return " UNION ALL ".join(
        f"SELECT toUnixTimestamp64Milli(min(event_ts)) AS first, count() AS n FROM {t.name} "
        "WHERE project_id = {project_id:String} AND event_ts >= fromUnixTimestamp64Milli({after_ms:Int64})"
        for t in tables
    )
