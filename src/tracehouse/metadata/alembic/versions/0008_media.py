"""Media uploads (Langfuse's media API): one row per project and sha256, and the links to traces and observations.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # filled in by the capability that owns these tables


def downgrade() -> None:
    pass
