"""Media's metadata tables (Langfuse's `media`, `trace_media`, `observation_media`; migration 0008).

A media id is derived from the content's SHA-256, so the same bytes have the same id in every
project: rows are keyed by (project_id, id), and each project has one row per digest.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from tracehouse.metadata.models import Base, UTCDateTime, utcnow


class Media(Base):
    __tablename__ = "media"

    project_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    sha256_hash: Mapped[str] = mapped_column("sha_256_hash", sa.String(44), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)
    uploaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    upload_http_status: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    upload_http_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    bucket_name: Mapped[str] = mapped_column(sa.String, nullable=False)  # "local" for the local folder
    bucket_path: Mapped[str] = mapped_column(sa.String, nullable=False)
    content_type: Mapped[str] = mapped_column(sa.String, nullable=False)
    content_length: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)

    __table_args__ = (sa.UniqueConstraint("project_id", "sha_256_hash", name="uq_media_project_id_sha_256_hash"),)


class TraceMedia(Base):
    """Media referenced by a trace's input, output or metadata."""

    __tablename__ = "trace_media"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    trace_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    media_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    field: Mapped[str] = mapped_column(sa.String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["project_id", "media_id"],
            ["media.project_id", "media.id"],
            ondelete="CASCADE",
            name="fk_trace_media_media",
        ),
        sa.UniqueConstraint("project_id", "trace_id", "media_id", "field", name="uq_trace_media_link"),
        sa.Index("ix_trace_media_project_id_media_id", "project_id", "media_id"),
    )


class ObservationMedia(Base):
    """Media referenced by an observation's input, output or metadata."""

    __tablename__ = "observation_media"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    trace_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    observation_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    media_id: Mapped[str] = mapped_column(sa.String, nullable=False)
    field: Mapped[str] = mapped_column(sa.String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["project_id", "media_id"],
            ["media.project_id", "media.id"],
            ondelete="CASCADE",
            name="fk_observation_media_media",
        ),
        sa.UniqueConstraint(
            "project_id",
            "trace_id",
            "observation_id",
            "media_id",
            "field",
            name="uq_observation_media_link",
        ),
        sa.Index("ix_observation_media_project_id_observation_id", "project_id", "observation_id"),
        sa.Index("ix_observation_media_project_id_media_id", "project_id", "media_id"),
    )
