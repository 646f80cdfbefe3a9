"""Blob storage (scheduled export) integrations.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_storage_integrations",
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("bucket_name", sa.String(), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=True),
        sa.Column("region", sa.String(), nullable=False),
        sa.Column("access_key_id", sa.String(), nullable=True),
        sa.Column("secret_access_key", sa.Text(), nullable=True),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("export_frequency", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("force_path_style", sa.Boolean(), nullable=False),
        sa.Column("file_type", sa.String(), nullable=False),
        sa.Column("export_mode", sa.String(), nullable=False),
        sa.Column("export_start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compressed", sa.Boolean(), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_blob_storage_integrations_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("project_id", name="pk_blob_storage_integrations"),
    )


def downgrade() -> None:
    op.drop_table("blob_storage_integrations")
