"""Model prices (Langfuse's models API): models, prices and pricing tiers.

Only a project's own model definitions are stored; the default ones are built in memory from the
genai-prices package (tracehouse/pricing/defaults.py). Prices are decimal text.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("match_pattern", sa.String(), nullable=False),
        sa.Column("start_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unit", sa.String(), nullable=True),
        sa.Column("tokenizer_id", sa.String(), nullable=True),
        sa.Column("tokenizer_config", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_models_project_id_projects", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("project_id", "model_name", name="uq_models_project_id_model_name"),
    )
    op.create_index("ix_models_project_id", "models", ["project_id"])
    op.create_table(
        "pricing_tiers",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("model_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_pricing_tiers_model_id_models", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_pricing_tiers"),
        sa.UniqueConstraint("model_id", "priority", name="uq_pricing_tiers_model_id_priority"),
        sa.UniqueConstraint("model_id", "name", name="uq_pricing_tiers_model_id_name"),
    )
    op.create_index("ix_pricing_tiers_model_id", "pricing_tiers", ["model_id"])
    op.create_table(
        "prices",
        sa.Column("pricing_tier_id", sa.String(), nullable=False),
        sa.Column("usage_type", sa.String(), nullable=False),
        sa.Column("price", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["pricing_tier_id"],
            ["pricing_tiers.id"],
            name="fk_prices_pricing_tier_id_pricing_tiers",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pricing_tier_id", "usage_type", name="pk_prices"),
    )


def downgrade() -> None:
    op.drop_table("prices")
    op.drop_index("ix_pricing_tiers_model_id", table_name="pricing_tiers")
    op.drop_table("pricing_tiers")
    op.drop_index("ix_models_project_id", table_name="models")
    op.drop_table("models")
