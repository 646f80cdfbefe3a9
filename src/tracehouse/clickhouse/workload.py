"""Workload classes: every ClickHouse query runs as one of these.

A class picks the connection (the export class may point at a replica or a dedicated user via
CLICKHOUSE_EXPORT_URL) and the per-query settings that keep one workload from starving the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tracehouse.settings import Settings


class Workload(StrEnum):
    INTERACTIVE = "interactive"
    INGESTION = "ingestion"
    EXPORT = "export"


@dataclass(frozen=True)
class WorkloadSettings:
    max_memory_usage: int
    max_threads: int  # 0 = the server's default (all cores)
    priority: int  # ClickHouse's: 1 is the highest, larger is lower; 0 = priorities not used
    timeout_ms: int
    os_thread_priority: int = 0  # nice value of the query's threads; 19 yields the CPU the most
    extra: tuple[tuple[str, Any], ...] = ()  # further settings of the class, sent as they are

    def query_settings(self) -> dict[str, Any]:
        """The ClickHouse settings sent with every query of this class."""
        settings: dict[str, Any] = {
            "max_memory_usage": self.max_memory_usage,
            "priority": self.priority,
            # ClickHouse counts in seconds; round up so a sub-second budget still means something.
            "max_execution_time": max(1, -(-self.timeout_ms // 1000)),
        }
        if self.os_thread_priority:
            settings["os_thread_priority"] = self.os_thread_priority
        if self.max_threads:
            settings["max_threads"] = self.max_threads
        settings.update(self.extra)
        return settings


def workload_settings(settings: Settings) -> dict[Workload, WorkloadSettings]:
    return {
        Workload.INTERACTIVE: WorkloadSettings(
            settings.interactive_max_memory_usage,
            settings.interactive_max_threads,
            settings.interactive_priority,
            settings.interactive_timeout_ms,
            os_thread_priority=settings.interactive_os_thread_priority,
        ),
        Workload.INGESTION: WorkloadSettings(
            settings.ingestion_max_memory_usage,
            settings.ingestion_max_threads,
            settings.ingestion_priority,
            settings.ingestion_timeout_ms,
            os_thread_priority=settings.ingestion_os_thread_priority,
        ),
        Workload.EXPORT: WorkloadSettings(
            settings.export_max_memory_usage,
            settings.export_max_threads,
            settings.export_priority,
            settings.export_timeout_ms,
            os_thread_priority=settings.export_os_thread_priority,
            # Exports read in sorting-key order; each parallel read stream buffers a block. Unbuffered,
            # small blocks keep memory flat however much a window holds (measured by bench/export.py).
            extra=(("read_in_order_use_buffering", 0), ("max_block_size", 8192)),
        ),
    }


class ClickHouseErrorKind(StrEnum):
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OVERCOMMIT = "OVERCOMMIT"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "unknown"


class ClickHouseError(Exception):
    """A query failed inside ClickHouse (or chDB). `kind` says why, for retries and splitting."""

    def __init__(self, message: str, kind: ClickHouseErrorKind = ClickHouseErrorKind.UNKNOWN) -> None:
        super().__init__(message)
        self.kind = kind


def classify_error(message: str) -> ClickHouseErrorKind:
    text = message.upper()
    if "MEMORY_LIMIT_EXCEEDED" in text or "CODE: 241" in text or "MEMORY LIMIT" in text:
        return ClickHouseErrorKind.MEMORY_LIMIT
    if "OVERCOMMIT" in text:
        return ClickHouseErrorKind.OVERCOMMIT
    if "TIMEOUT_EXCEEDED" in text or "CODE: 159" in text or "TIMED OUT" in text or "TIMEOUT" in text:
        return ClickHouseErrorKind.TIMEOUT
    return ClickHouseErrorKind.UNKNOWN
