"""Batch export's typed contracts: the create request, the record as the API shows it, and the
frozen record the worker reads.

JSON field names are Langfuse's camelCase. `filter` is an object of the read API's own list
parameters for the table (`userId`, `name`, `fromTimestamp`, ..., and the JSON `filter` grammar),
validated by `filters.py` exactly as the list route validates its query string.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from tracehouse.queries.models import ApiTime, MetaResponse


class TableName(StrEnum):
    TRACES = "traces"
    OBSERVATIONS = "observations"
    SCORES = "scores"
    SESSIONS = "sessions"


class FileFormat(StrEnum):
    CSV = "CSV"
    JSON = "JSON"
    JSONL = "JSONL"
    PARQUET = "PARQUET"

    def extension(self, gzipped: bool) -> str:
        return self.value.lower() + (".gz" if gzipped else "")

    def content_type(self, gzipped: bool) -> str:
        if gzipped:
            return "application/gzip"
        return {
            "CSV": "text/csv; charset=utf-8",
            "JSON": "application/json",
            "JSONL": "application/x-ndjson",
            "PARQUET": "application/vnd.apache.parquet",
        }[self.value]


class Status(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINISHED = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# A simple address check: the SMTP server is the judge of deliverability.
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CreateBatchExportRequest(_Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    table_name: TableName
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="The table's list-route parameters (e.g. userId, name, fromTimestamp, environment) and "
        "`filter`, Langfuse's JSON filter conditions (a JSON string, or the array itself)",
    )
    order_by: str | None = Field(None, description="Traces only: <column>.<asc|desc>, as GET /api/public/traces")
    format: FileFormat
    compressed: bool = Field(False, description="gzip the file (CSV, JSON, JSONL; Parquet pages are always zstd)")
    email: str | None = Field(None, max_length=320, pattern=EMAIL_PATTERN, description="Where the notice goes")
    name: str | None = Field(None, min_length=1, max_length=200)


class CreatedBatchExport(_Camel):
    id: str
    status: Status


class BatchExportView(_Camel):
    id: str
    project_id: str
    name: str
    status: Status
    table_name: TableName
    format: FileFormat
    compressed: bool
    filter: dict[str, Any]
    order_by: str | None
    email: str | None
    rows_exported: int = Field(description="Rows written to the file so far")
    total_rows: int | None = Field(description="Rows the export will hold, once counted (at most the row limit)")
    truncated: bool = Field(description="More rows matched than BATCH_EXPORT_ROW_LIMIT; the file holds the first")
    size_bytes: int | None
    url: str | None = Field(description="Signed download link (COMPLETED only), valid until expiresAt")
    expires_at: ApiTime | None
    error: str | None = Field(description="Why it failed (FAILED only)")
    created_at: ApiTime
    started_at: ApiTime | None
    finished_at: ApiTime | None


class BatchExports(_Camel):
    data: list[BatchExportView]
    meta: MetaResponse


@dataclass(frozen=True)
class ExportRecord:
    """One `batch_exports` row, as the worker and the routes read it."""

    id: str
    project_id: str
    name: str
    status: Status
    query: dict[str, Any]  # {tableName, filter, orderBy}
    format: FileFormat
    compressed: bool
    email: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    rows_exported: int
    total_rows: int | None
    truncated: bool
    object_key: str | None
    size_bytes: int | None
    url: str | None
    log: str | None

    @property
    def table(self) -> TableName:
        return TableName(self.query["tableName"])

    @property
    def gzipped(self) -> bool:
        return self.compressed and self.format is not FileFormat.PARQUET

    def view(self) -> BatchExportView:
        return BatchExportView(
            id=self.id,
            project_id=self.project_id,
            name=self.name,
            status=self.status,
            table_name=self.table,
            format=self.format,
            compressed=self.compressed,
            filter=self.query.get("filter") or {},
            order_by=self.query.get("orderBy"),
            email=self.email,
            rows_exported=self.rows_exported,
            total_rows=self.total_rows,
            truncated=self.truncated,
            size_bytes=self.size_bytes,
            url=self.url if self.status is Status.COMPLETED else None,
            expires_at=self.expires_at if self.status is Status.COMPLETED else None,
            error=self.log,
            created_at=self.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )
