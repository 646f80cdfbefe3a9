"""Export progress: the window in flight and the last job's figures.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS: list[tuple[str, Any]] = [
    ("pending_window_start", sa.DateTime(timezone=True)),
    ("pending_window_end", sa.DateTime(timezone=True)),
    ("run_started_at", sa.DateTime(timezone=True)),
    ("run_owner", sa.String()),
    ("last_job_finished_at", sa.DateTime(timezone=True)),
    ("last_job_duration_ms", sa.BigInteger()),
    ("last_job_rows", sa.BigInteger()),
    ("last_job_files", sa.Integer()),
]


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.add_column("blob_storage_integrations", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    for name, _ in reversed(_COLUMNS):
        op.drop_column("blob_storage_integrations", name)
