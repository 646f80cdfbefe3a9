"""The export job's state in the integration row: lease, pending window, cursor, last-job figures.

Every change is a conditional UPDATE on what the job read, so two jobs for one project (a stalled
job's retry beside a fresh one) can never both move the cursor. Blocking; call from a thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import CursorResult

from tracehouse.export.crypto import SecretBox
from tracehouse.export.integrations import Integration
from tracehouse.export.windows import ExportWindow
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import BlobStorageIntegration as Row

LEASE_STALE_AFTER = timedelta(minutes=15)


def load_integration(metadata: MetadataDB, box: SecretBox, project_id: str) -> Integration | None:
    with metadata.session() as session:
        row = session.get(Row, project_id)
        if row is None:
            return None
        return Integration(
            project_id=row.project_id,
            type=row.type,
            bucket_name=row.bucket_name,
            endpoint=row.endpoint,
            region=row.region,
            access_key_id=row.access_key_id,
            secret_access_key=box.decrypt(row.secret_access_key) if row.secret_access_key else None,
            prefix=row.prefix,
            export_frequency=row.export_frequency,
            enabled=row.enabled,
            force_path_style=row.force_path_style,
            file_type=row.file_type,
            export_mode=row.export_mode,
            export_start_date=row.export_start_date,
            compressed=row.compressed,
            last_sync_at=row.last_sync_at,
            next_sync_at=row.next_sync_at,
            internal_endpoint_allowed=bool(row.internal_endpoint_allowed),
            pending_window=(
                ExportWindow(row.pending_window_start, row.pending_window_end)
                if row.pending_window_start and row.pending_window_end
                else None
            ),
        )


def _update(metadata: MetadataDB, project_id: str, *conditions: Any, **values: Any) -> bool:
    with metadata.session() as session:
        result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Row).where(Row.project_id == project_id, *conditions).values(**values)
        )
        return result.rowcount == 1


def _is(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


def take_lease(metadata: MetadataDB, project_id: str, job_key: str, now: datetime) -> str | None:
    """Take the project's export lease for one attempt of the queue job `job_key`; returns the token.

    A new attempt of the same job (the queue re-running a stalled or killed job) takes the lease over
    at once; any other job only once the lease is stale. The token is new per attempt, so an older
    attempt still running somewhere notices (renew fails) and stops before writing a manifest."""
    token = f"{job_key}#{uuid.uuid4().hex[:12]}"
    free = (
        Row.run_owner.is_(None)
        | Row.run_owner.startswith(job_key + "#", autoescape=True)
        | Row.run_started_at.is_(None)
        | (Row.run_started_at < now - LEASE_STALE_AFTER)
    )
    return token if _update(metadata, project_id, free, run_owner=token, run_started_at=now) else None


def renew_lease(metadata: MetadataDB, project_id: str, token: str) -> bool:
    return _update(metadata, project_id, Row.run_owner == token, run_started_at=datetime.now(UTC))


def release_lease(metadata: MetadataDB, project_id: str, token: str) -> None:
    _update(metadata, project_id, Row.run_owner == token, run_owner=None, run_started_at=None)


def set_initial_cursor(metadata: MetadataDB, project_id: str, cursor: datetime) -> bool:
    return _update(
        metadata, project_id, Row.last_sync_at.is_(None), Row.pending_window_end.is_(None), last_sync_at=cursor
    )


def fix_window(metadata: MetadataDB, project_id: str, window: ExportWindow) -> bool:
    """Record the window before any file is written: retries export exactly this window again."""
    return _update(
        metadata,
        project_id,
        Row.last_sync_at == window.start,
        Row.pending_window_end.is_(None),
        pending_window_start=window.start,
        pending_window_end=window.end,
    )


def set_next_run(metadata: MetadataDB, project_id: str, cursor: datetime, next_run: datetime) -> None:
    _update(metadata, project_id, _is(Row.last_sync_at, cursor), next_sync_at=next_run)


@dataclass(frozen=True)
class JobFigures:
    finished_at: datetime
    duration_ms: int
    rows: int
    files: int


def advance_cursor(
    metadata: MetadataDB, project_id: str, token: str, window: ExportWindow, next_run: datetime, figures: JobFigures
) -> bool:
    """The commit point after the manifest: the window is done, the cursor moves to its end."""
    return _update(
        metadata,
        project_id,
        Row.run_owner == token,
        Row.pending_window_start == window.start,
        Row.pending_window_end == window.end,
        last_sync_at=window.end,
        next_sync_at=next_run,
        pending_window_start=None,
        pending_window_end=None,
        last_error=None,
        last_error_at=None,
        last_job_finished_at=figures.finished_at,
        last_job_duration_ms=figures.duration_ms,
        last_job_rows=figures.rows,
        last_job_files=figures.files,
    )


def record_failure(metadata: MetadataDB, project_id: str, error: str, now: datetime, duration_ms: int) -> None:
    _update(
        metadata,
        project_id,
        last_error=error[:1000],
        last_error_at=now,
        last_job_finished_at=now,
        last_job_duration_ms=duration_ms,
    )
