"""Blob-storage export integrations: validation, storage with encrypted secrets, Langfuse's JSON shape.

One integration per project (as Langfuse). Secrets are encrypted with ENCRYPTION_KEY and are never
returned by the API or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tracehouse.errors import ConfigError, TracehouseError
from tracehouse.export.crypto import SecretBox
from tracehouse.export.egress import ALLOWLIST_SETTING, EgressRule, Resolve, ip_literal, resolve_host
from tracehouse.export.models import (
    FREQUENCIES,
    ExportProgress,
    IntegrationRequest,
    IntegrationResponse,
    IntegrationStatus,
    LastJob,
    PendingWindow,
)
from tracehouse.export.windows import ExportWindow
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import BlobStorageIntegration, Project
from tracehouse.timefmt import api_time


@dataclass(frozen=True)
class Integration:
    """An integration as the export job uses it: secret decrypted, never serialized."""

    project_id: str
    type: str
    bucket_name: str
    endpoint: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None
    prefix: str
    export_frequency: str
    enabled: bool
    force_path_style: bool
    file_type: str
    export_mode: str
    export_start_date: datetime | None
    compressed: bool
    last_sync_at: datetime | None
    next_sync_at: datetime | None
    pending_window: ExportWindow | None = None
    internal_endpoint_allowed: bool = False  # saved by the admin key or the CLI (see egress.py)

    @property
    def frequency(self) -> timedelta:
        return FREQUENCIES[self.export_frequency]


def response_view(row: BlobStorageIntegration) -> IntegrationResponse:
    """Langfuse's BlobStorageIntegrationResponse; the secret is never included."""
    return IntegrationResponse(
        id=row.project_id,
        project_id=row.project_id,
        type=row.type,
        bucket_name=row.bucket_name,
        endpoint=row.endpoint,
        region=row.region,
        access_key_id=row.access_key_id,
        prefix=row.prefix,
        export_frequency=row.export_frequency,
        enabled=row.enabled,
        force_path_style=row.force_path_style,
        file_type=row.file_type,
        export_mode=row.export_mode,
        export_start_date=api_time(row.export_start_date),
        compressed=row.compressed,
        next_sync_at=api_time(row.next_sync_at),
        last_sync_at=api_time(row.last_sync_at),
        last_error=row.last_error,
        last_error_at=api_time(row.last_error_at),
        created_at=api_time(row.created_at) or "",
        updated_at=api_time(row.updated_at) or "",
    )


def _sync_status(row: BlobStorageIntegration) -> str:
    if not row.enabled:
        return "disabled"
    if row.last_error and (not row.last_sync_at or (row.last_error_at or row.last_sync_at) >= row.last_sync_at):
        return "error"
    if row.next_sync_at and row.next_sync_at <= datetime.now(UTC):
        return "queued"
    return "up_to_date" if row.last_sync_at else "idle"


def _status_fields(row: BlobStorageIntegration) -> dict[str, Any]:
    return {
        "id": row.project_id,
        "projectId": row.project_id,
        "syncStatus": _sync_status(row),
        "enabled": row.enabled,
        "lastSyncAt": api_time(row.last_sync_at),
        "nextSyncAt": api_time(row.next_sync_at),
        "lastError": row.last_error,
        "lastErrorAt": api_time(row.last_error_at),
    }


def status_view(row: BlobStorageIntegration) -> IntegrationStatus:
    return IntegrationStatus.model_validate(_status_fields(row))


def progress_view(row: BlobStorageIntegration, now: datetime) -> ExportProgress:
    """Export progress of one project (GET .../blob-storage/status, `tracehouse export status`)."""
    lag = (now - row.last_sync_at).total_seconds() / 60 if row.last_sync_at else None
    pending = (
        PendingWindow(start=api_time(row.pending_window_start), end=api_time(row.pending_window_end))
        if row.pending_window_start
        else None
    )
    return ExportProgress.model_validate(
        {
            **_status_fields(row),
            "exportedUntil": api_time(row.last_sync_at),
            "lagMinutes": round(lag, 1) if lag is not None else None,
            "pendingWindow": pending,
            "running": row.run_owner is not None,
            "lastJob": LastJob(
                finished_at=api_time(row.last_job_finished_at),
                duration_ms=row.last_job_duration_ms,
                rows=row.last_job_rows,
                files=row.last_job_files,
            ),
            "nextRunAt": api_time(row.next_sync_at),
        }
    )


class ProjectNotFound(TracehouseError):
    """An integration was saved for a project that does not exist."""

    def __init__(self, project_id: str) -> None:
        self.project_id = project_id
        super().__init__(f"project {project_id!r} does not exist")


class DestinationRefused(TracehouseError):
    """The integration's endpoint is not a destination this caller may export to."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.message = message
        super().__init__(f"{parameter}: {message}")


def endpoint_hosts(type_: str, endpoint: str, bucket: str, force_path_style: bool) -> tuple[list[str], int]:
    """The host names a store with this endpoint connects to, and the port."""
    try:
        url = urlsplit(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("endpoint", "is not a valid URL") from None
    host = url.hostname
    if not host or url.username is not None or url.password is not None:
        raise DestinationRefused("endpoint", "must be http(s)://host[:port][/path], without user info")
    hosts = [host]
    if type_ in ("S3", "S3_COMPATIBLE") and not force_path_style and ip_literal(host) is None:
        hosts.append(f"{bucket}.{host}")  # virtual-hosted style: the bucket's own host name
    return hosts, port


async def refused_host(
    type_: str,
    endpoint: str | None,
    bucket: str,
    force_path_style: bool,
    rule: EgressRule,
    *,
    internal: bool,
    resolve: Resolve = resolve_host,
) -> str | None:
    """The first `host:port` of the endpoint the rule refuses (None: every one is permitted)."""
    if type_ == "LOCAL" or not endpoint:
        return None  # a folder, or the provider's own public endpoint
    hosts, port = endpoint_hosts(type_, endpoint, bucket, force_path_style)
    for host in hosts:
        if rule.refuses_name(host) or not rule.permits(host, port, await resolve(host, port), internal=internal):
            return f"{host}:{port}"
    return None


async def check_destination(
    request: IntegrationRequest, rule: EgressRule, *, admin: bool, resolve: Resolve = resolve_host
) -> None:
    """Refuse an endpoint that does not resolve to public internet addresses only; the admin key may
    also save one the allowlist covers. (The egress proxy checks again at connect time.)"""
    refused = await refused_host(
        request.type,
        request.endpoint,
        request.bucket_name,
        request.force_path_style,
        rule,
        internal=admin,
        resolve=resolve,
    )
    if refused is None:
        return
    if not admin:
        # The same words whether the host is internal or does not resolve: a project key learns
        # nothing about the server's network from the answer.
        raise DestinationRefused(
            "endpoint",
            "must resolve to public internet addresses only (loopback, private, link-local, "
            "unique-local and cloud metadata addresses are refused; only the admin key may set "
            "an internal destination the operator allowed)",
        )
    raise DestinationRefused(
        "endpoint",
        f"{refused} does not resolve, or resolves to an address outside the public internet "
        f"that {ALLOWLIST_SETTING} does not list (cloud metadata addresses are always refused)",
    )


def upsert_integration(
    metadata: MetadataDB, box: SecretBox, request: IntegrationRequest, *, internal_allowed: bool = False
) -> IntegrationResponse:
    """Create or replace the project's integration; ProjectNotFound when there is no such project.

    `internal_allowed`: the caller (the admin key, the CLI) may aim the endpoint at an internal address
    the allowlist covers; it is stored, so the egress proxy applies the same rule at every connection."""
    secret = box.encrypt(request.secret_access_key) if request.secret_access_key else None
    try:
        return _upsert(metadata, secret, request, internal_allowed)
    except IntegrityError:
        # The project was deleted meanwhile. The database error's text holds the statement's
        # parameters (access key id, encrypted secret): it must not travel on.
        raise ProjectNotFound(request.project_id) from None


def _upsert(
    metadata: MetadataDB, secret: str | None, request: IntegrationRequest, internal_allowed: bool
) -> IntegrationResponse:
    now = datetime.now(UTC)
    with metadata.session() as session:
        if session.get(Project, request.project_id) is None:
            raise ProjectNotFound(request.project_id)
        row = session.get(BlobStorageIntegration, request.project_id)
        start_date = request.export_start_date
        if request.export_mode == "FROM_TODAY" and start_date is None:
            # "From today" = from midnight UTC of the day it was chosen, kept on later saves.
            kept = row.export_start_date if row is not None and row.export_mode == "FROM_TODAY" else None
            start_date = kept or now.replace(hour=0, minute=0, second=0, microsecond=0)
        elif request.export_mode == "FULL_HISTORY":
            start_date = None
        request = request.model_copy(update={"export_start_date": start_date})
        if row is None:
            row = BlobStorageIntegration(project_id=request.project_id, next_sync_at=None)  # None = due now
            session.add(row)
        elif (row.export_mode, row.export_start_date) != (request.export_mode, start_date):
            # As Langfuse: a new starting point starts the export over (new manifests from there on).
            row.last_sync_at = row.pending_window_start = row.pending_window_end = row.next_sync_at = None
        elif request.enabled and not row.enabled:
            row.next_sync_at = now
        for name in (
            "type",
            "bucket_name",
            "endpoint",
            "region",
            "access_key_id",
            "prefix",
            "export_frequency",
            "enabled",
            "force_path_style",
            "file_type",
            "export_mode",
            "export_start_date",
            "compressed",
        ):
            setattr(row, name, getattr(request, name))
        row.internal_endpoint_allowed = internal_allowed
        row.secret_access_key = secret
        row.updated_at = now
        session.flush()
        return response_view(row)


def list_integrations(metadata: MetadataDB, project_id: str | None) -> list[BlobStorageIntegration]:
    with metadata.session() as session:
        query = select(BlobStorageIntegration).order_by(BlobStorageIntegration.project_id)
        if project_id is not None:
            query = query.where(BlobStorageIntegration.project_id == project_id)
        rows = list(session.execute(query).scalars())
        session.expunge_all()
        return rows


def due_integrations(metadata: MetadataDB, now: datetime) -> list[tuple[str, datetime | None]]:
    """(project, cursor) of every enabled integration whose next run is due."""
    with metadata.session() as session:
        rows = session.execute(
            select(BlobStorageIntegration.project_id, BlobStorageIntegration.last_sync_at)
            .where(BlobStorageIntegration.enabled.is_(True))
            .where(BlobStorageIntegration.next_sync_at.is_(None) | (BlobStorageIntegration.next_sync_at <= now))
            .order_by(BlobStorageIntegration.project_id)
        )
        return [(r.project_id, r.last_sync_at) for r in rows]


def delete_integration(metadata: MetadataDB, project_id: str) -> bool:
    with metadata.session() as session:
        row = session.get(BlobStorageIntegration, project_id)
        if row is None:
            return False
        session.delete(row)
        return True


def check_secrets_readable(metadata: MetadataDB, box: SecretBox) -> None:
    """Refuse to start when stored secrets exist but ENCRYPTION_KEY is missing or wrong."""
    stored = [r for r in list_integrations(metadata, None) if r.secret_access_key]
    if not stored:
        return
    if not box.ready:
        raise ConfigError(
            f"ENCRYPTION_KEY is not set but {len(stored)} export integration(s) have stored "
            "secrets; set the key they were encrypted with"
        )
    box.decrypt(stored[0].secret_access_key or "")
