"""Export's typed boundaries: the integration request, its responses (Langfuse's field names) and the
status and progress views."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# Export cadence. `every_20_minutes` is accepted because the current SDK's enum has it.
FREQUENCIES: dict[str, timedelta] = {
    "every_15_minutes": timedelta(minutes=15),
    "every_20_minutes": timedelta(minutes=20),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
    "weekly": timedelta(weeks=1),
}
IntegrationType = Literal["S3", "S3_COMPATIBLE", "GOOGLE_CLOUD_STORAGE", "AZURE_BLOB_STORAGE", "LOCAL"]
# Bucket, container and region names become part of a host name (virtual-hosted style, the default
# AWS endpoint), so they may not carry anything that changes the URL: no '/', '@', ':', '#', ...
_HOST_LABELS = re.compile(r"^[A-Za-z0-9._-]+$")


class IntegrationRequest(BaseModel):
    """The body of PUT /api/public/integrations/blob-storage (Langfuse's field names)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    project_id: str = Field(alias="projectId", min_length=1)
    type: IntegrationType
    bucket_name: str = Field(alias="bucketName", min_length=1)
    endpoint: str | None = None
    region: str = "auto"
    access_key_id: str | None = Field(None, alias="accessKeyId")
    secret_access_key: str | None = Field(None, alias="secretAccessKey")
    prefix: str = ""
    export_frequency: Literal["every_15_minutes", "every_20_minutes", "hourly", "daily", "weekly"] = Field(
        "hourly", alias="exportFrequency"
    )
    enabled: bool = True
    force_path_style: bool = Field(False, alias="forcePathStyle")
    file_type: Literal["PARQUET", "JSONL", "CSV"] = Field("PARQUET", alias="fileType")
    export_mode: Literal["FULL_HISTORY", "FROM_TODAY", "FROM_CUSTOM_DATE"] = Field("FULL_HISTORY", alias="exportMode")
    export_start_date: datetime | None = Field(None, alias="exportStartDate")
    compressed: bool = True

    @field_validator("bucket_name")
    @classmethod
    def _bucket(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") == "LOCAL":
            # One folder name under <data dir>/exports/<project>/.
            if value in (".", "..") or any(c in value for c in "/\\\0"):
                raise ValueError("a LOCAL bucketName is one folder name: not '.' or '..', no '/' or '\\'")
        elif not _HOST_LABELS.match(value):
            raise ValueError("bucketName may contain letters, digits, '.', '-' and '_' only")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") == "LOCAL" and (
            value.startswith("/") or "\\" in value or "\0" in value or ".." in value.split("/")
        ):
            raise ValueError("a LOCAL prefix is a relative path: no leading '/', no '..' segment, no '\\'")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _HOST_LABELS.match(value):
            raise ValueError("region may contain letters, digits, '.', '-' and '_' only")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> IntegrationRequest:
        if self.export_mode == "FROM_CUSTOM_DATE" and self.export_start_date is None:
            raise ValueError("exportStartDate is required with exportMode FROM_CUSTOM_DATE")
        if self.export_start_date is not None and self.export_start_date.tzinfo is None:
            raise ValueError("exportStartDate must include a time zone offset")
        if self.type == "S3_COMPATIBLE" and not self.endpoint:
            raise ValueError("endpoint is required for S3_COMPATIBLE")
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError("endpoint must be an http:// or https:// URL")
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError("prefix must end with '/'")
        if (self.access_key_id is None) != (self.secret_access_key is None) and self.type != "LOCAL":
            raise ValueError("accessKeyId and secretAccessKey go together (or neither, for ambient credentials)")
        return self


class _Camel(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class IntegrationResponse(_Camel):
    """Langfuse's BlobStorageIntegrationResponse; the secret is never included."""

    id: str
    project_id: str = Field(alias="projectId")
    type: IntegrationType
    bucket_name: str = Field(alias="bucketName")
    endpoint: str | None = None
    region: str
    access_key_id: str | None = Field(None, alias="accessKeyId")
    prefix: str
    export_frequency: str = Field(alias="exportFrequency")
    enabled: bool
    force_path_style: bool = Field(alias="forcePathStyle")
    file_type: str = Field(alias="fileType")
    export_mode: str = Field(alias="exportMode")
    export_start_date: str | None = Field(None, alias="exportStartDate")
    compressed: bool
    export_source: str = Field("LEGACY_TRACES_OBSERVATIONS", alias="exportSource")
    export_field_groups: list[str] | None = Field(None, alias="exportFieldGroups")
    next_sync_at: str | None = Field(None, alias="nextSyncAt")
    last_sync_at: str | None = Field(None, alias="lastSyncAt")
    last_error: str | None = Field(None, alias="lastError")
    last_error_at: str | None = Field(None, alias="lastErrorAt")
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")


class IntegrationsResponse(BaseModel):
    data: list[IntegrationResponse]


SyncStatus = Literal["up_to_date", "pending", "queued", "error", "disabled", "idle"]


class IntegrationStatus(_Camel):
    """Langfuse's BlobStorageIntegrationStatusResponse."""

    id: str
    project_id: str = Field(alias="projectId")
    sync_status: SyncStatus = Field(alias="syncStatus")
    enabled: bool
    last_sync_at: str | None = Field(None, alias="lastSyncAt")
    next_sync_at: str | None = Field(None, alias="nextSyncAt")
    last_error: str | None = Field(None, alias="lastError")
    last_error_at: str | None = Field(None, alias="lastErrorAt")


class PendingWindow(BaseModel):
    start: str | None
    end: str | None


class LastJob(_Camel):
    finished_at: str | None = Field(None, alias="finishedAt")
    duration_ms: int | None = Field(None, alias="durationMs")
    rows: int | None = None
    files: int | None = None


class ExportProgress(IntegrationStatus):
    """One project's export progress (GET .../blob-storage/status, `tracehouse export status`)."""

    exported_until: str | None = Field(None, alias="exportedUntil")
    lag_minutes: float | None = Field(None, alias="lagMinutes")
    pending_window: PendingWindow | None = Field(None, alias="pendingWindow")
    running: bool
    last_job: LastJob = Field(alias="lastJob")
    next_run_at: str | None = Field(None, alias="nextRunAt")


class ExportProgressList(BaseModel):
    data: list[ExportProgress]


class IntegrationDeleted(BaseModel):
    message: str
