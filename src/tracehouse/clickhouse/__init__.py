"""ClickHouse access: one narrow interface, two backends, three workload classes, one table catalog."""

from tracehouse.clickhouse import catalog
from tracehouse.clickhouse.catalog import Column, Kind, Table, ValueDomain
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
    "Column",
    "ClickHouse",
    "ClickHouseError",
    "ClickHouseErrorKind",
    "HttpBackend",
    "Kind",
    "Table",
    "ValueDomain",
    "Workload",
    "WorkloadSettings",
    "catalog",
    "classify_error",
    "migrate_clickhouse",
]
