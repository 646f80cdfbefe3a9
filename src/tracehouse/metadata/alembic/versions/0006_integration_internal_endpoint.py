"""Export integrations: whether the admin key (or the CLI) saved the endpoint, so the egress proxy
lets it reach an allowlisted internal address; a project key's endpoint stays public-only for good.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "blob_storage_integrations",
        sa.Column("internal_endpoint_allowed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("blob_storage_integrations", "internal_endpoint_allowed")
