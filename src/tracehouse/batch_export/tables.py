"""The batch export records (Langfuse's `batch_exports`; migration 0009).

One row per requested export. `query` holds the request as given (table, filter parameters, order)
so the worker validates exactly what the client sent; the row also carries the progress, the
outcome (object key, size, signed URL and its expiry, or the readable reason it failed) and times.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tracehouse.metadata.models import Base, UTCDateTime, utcnow


class BatchExport(Base):
    __tablename__ = "batch_exports"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(sa.String, nullable=False)
    status: Mapped[str] = mapped_column(sa.String, nullable=False)
    query: Mapped[Any] = mapped_column(sa.JSON, nullable=False)  # {tableName, filter, orderBy}
    format: Mapped[str] = mapped_column(sa.String, nullable=False)
    compressed: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    email: Mapped[str | None] = mapped_column(sa.String, nullable=True)  # where the notices go
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rows_exported: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    total_rows: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    truncated: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    object_key: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    size_bytes: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    log: Mapped[str | None] = mapped_column(sa.Text, nullable=True)  # the user-facing reason it failed

    __table_args__ = (
        sa.Index("ix_batch_exports_project_id_created_at", "project_id", "created_at"),
        sa.Index("ix_batch_exports_status", "status"),
        sa.Index("ix_batch_exports_expires_at", "expires_at"),
    )
