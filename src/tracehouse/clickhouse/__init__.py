"""ClickHouse access: one narrow interface, two backends, three workload classes."""

from tracehouse.clickhouse.client import ChdbBackend, ClickHouse, HttpBackend
from tracehouse.clickhouse.migrations import migrate_clickhouse
from tracehouse.clickhouse.workload import (
    ClickHouseError,
    ClickHouseErrorKind,
    Workload,
    WorkloadSettings,
    classify_error,
)

__all__ = [
    "ChdbBackend",
    "ClickHouse",
    "ClickHouseError",
    "ClickHouseErrorKind",
    "HttpBackend",
    "Workload",
    "WorkloadSettings",
    "classify_error",
    "migrate_clickhouse",
]
