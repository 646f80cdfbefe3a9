"""Cron run audit trail and hourly usage.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cron_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("worker", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cron_runs"),
    )
    op.create_index("ix_cron_runs_name_period_start", "cron_runs", ["name", "period_start"], unique=False)
    op.create_table(
        "usage_hourly",
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("traces", sa.BigInteger(), nullable=False),
        sa.Column("observations", sa.BigInteger(), nullable=False),
        sa.Column("scores", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "hour", name="pk_usage_hourly"),
    )


def downgrade() -> None:
    op.drop_table("usage_hourly")
    op.drop_index("ix_cron_runs_name_period_start", table_name="cron_runs")
    op.drop_table("cron_runs")
