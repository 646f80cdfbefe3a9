"""SQLAlchemy models for the metadata database (projects, API keys, cron bookkeeping).

The schema itself is owned by the Alembic migrations next to this file; these classes must
describe the same tables (a test compares them with autogenerate).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so later migrations (including SQLite batch rebuilds) can refer
# to constraints by name on every backend.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always UTC and timezone-aware in Python, whatever the backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are written as naive
    UTC and given their zone back on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers return datetime
            value = datetime.fromisoformat(str(value))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=sa.func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow, server_default=sa.func.now()
    )
    retention_days: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)

    def __repr__(self) -> str:
        return f"Project(id={self.id!r}, name={self.name!r})"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True
    )
    public_key: Mapped[str] = mapped_column(sa.String, nullable=False, unique=True, index=True)
    # Langfuse's fast hash of the secret; the secret itself is never stored.
    hashed_secret_key: Mapped[str] = mapped_column(sa.String, nullable=False, unique=True)
    display_secret_key: Mapped[str] = mapped_column(sa.String, nullable=False)
    note: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=sa.func.now()
    )
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return f"ApiKey(id={self.id!r}, project_id={self.project_id!r}, public_key={self.public_key!r})"


class CronJob(Base):
    """One row per periodic job; used to run each job exactly once across processes."""

    __tablename__ = "cron_jobs"

    name: Mapped[str] = mapped_column(sa.String, primary_key=True)
    last_run: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    job_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # 'QUEUED' or 'PROCESSING'
    state: Mapped[str | None] = mapped_column(sa.String, nullable=True)

    def __repr__(self) -> str:
        return f"CronJob(name={self.name!r}, state={self.state!r})"


class CronRun(Base):
    """One row per period a cron job committed: the audit trail of exactly-once execution."""

    __tablename__ = "cron_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String, nullable=False)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    worker: Mapped[str] = mapped_column(sa.String, nullable=False)

    # Deliberately not unique: exactly-once is enforced by the cron_jobs.last_run compare-and-set,
    # and a duplicate here would be visible evidence that it failed.
    __table_args__ = (sa.Index("ix_cron_runs_name_period_start", "name", "period_start"),)


class UsageHourly(Base):
    """Traces, observations and scores created per project and hour (written by usage metering)."""

    __tablename__ = "usage_hourly"

    project_id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    traces: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    observations: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    scores: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class DeadLetter(Base):
    """An entity whose ClickHouse write exhausted its retries; replayable from its raw batch."""

    __tablename__ = "ingestion_dead_letters"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(sa.String, nullable=False, index=True)
    table_name: Mapped[str] = mapped_column(sa.String, nullable=False)
    entity_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    batch_key: Mapped[str] = mapped_column(sa.String, nullable=False)
    last_error: Mapped[str] = mapped_column(sa.Text, nullable=False)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    first_failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class BlobStorageIntegration(Base):
    """A project's scheduled export destination (one per project, as in Langfuse)."""

    __tablename__ = "blob_storage_integrations"

    project_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    type: Mapped[str] = mapped_column(sa.String, nullable=False)
    bucket_name: Mapped[str] = mapped_column(sa.String, nullable=False)
    endpoint: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    region: Mapped[str] = mapped_column(sa.String, nullable=False)
    access_key_id: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    secret_access_key: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # encrypted, never plaintext
    prefix: Mapped[str] = mapped_column(sa.String, nullable=False, default="")
    export_frequency: Mapped[str] = mapped_column(sa.String, nullable=False)
    enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    force_path_style: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    file_type: Mapped[str] = mapped_column(sa.String, nullable=False, default="PARQUET")
    export_mode: Mapped[str] = mapped_column(sa.String, nullable=False, default="FULL_HISTORY")
    export_start_date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    compressed: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True)
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    next_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    # The window being exported, fixed before the first file is written so that a retry (after a
    # crash, even after its manifest was written) exports exactly the same window again.
    pending_window_start: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    pending_window_end: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # A lease: the job (by queue job id) exporting this project now. A retry of the same job takes
    # it over at once; another job only after it went stale.
    run_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    run_owner: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    last_job_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_job_duration_ms: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    last_job_rows: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    last_job_files: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    # Saved by the admin key or the CLI: the endpoint may reach an internal address the operator
    # allowlisted. A project key's endpoint is held to public internet addresses at every connection.
    internal_endpoint_allowed: Mapped[bool] = mapped_column(
        sa.Boolean, nullable=False, default=False, server_default=sa.false()
    )
