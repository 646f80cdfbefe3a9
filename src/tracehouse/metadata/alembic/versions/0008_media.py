"""Media uploads (Langfuse's media API): one row per project and sha256, and the links to traces and observations.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("sha_256_hash", sa.String(44), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("upload_http_status", sa.Integer(), nullable=True),
        sa.Column("upload_http_error", sa.Text(), nullable=True),
        sa.Column("bucket_name", sa.String(), nullable=False),
        sa.Column("bucket_path", sa.String(), nullable=False),
        sa.Column("content_type", sa.String(), nullable=False),
        sa.Column("content_length", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_media_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", "id", name="pk_media"),
        sa.UniqueConstraint("project_id", "sha_256_hash", name="uq_media_project_id_sha_256_hash"),
    )
    op.create_table(
        "trace_media",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=False),
        sa.Column("media_id", sa.String(), nullable=False),
        sa.Column("field", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "media_id"],
            ["media.project_id", "media.id"],
            name="fk_trace_media_media",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_trace_media"),
        sa.UniqueConstraint("project_id", "trace_id", "media_id", "field", name="uq_trace_media_link"),
    )
    op.create_index("ix_trace_media_project_id_media_id", "trace_media", ["project_id", "media_id"])
    op.create_table(
        "observation_media",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=False),
        sa.Column("observation_id", sa.String(), nullable=False),
        sa.Column("media_id", sa.String(), nullable=False),
        sa.Column("field", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "media_id"],
            ["media.project_id", "media.id"],
            name="fk_observation_media_media",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_observation_media"),
        sa.UniqueConstraint(
            "project_id", "trace_id", "observation_id", "media_id", "field", name="uq_observation_media_link"
        ),
    )
    op.create_index(
        "ix_observation_media_project_id_observation_id", "observation_media", ["project_id", "observation_id"]
    )
    op.create_index("ix_observation_media_project_id_media_id", "observation_media", ["project_id", "media_id"])


def downgrade() -> None:
    op.drop_table("observation_media")
    op.drop_table("trace_media")
    op.drop_table("media")
