"""The metadata tables of a project's own model definitions (Langfuse's models, pricing_tiers, prices).

Default (managed) models are not stored: they are built in memory from the genai-prices package
(`defaults.py`), so these tables hold only project models and `project_id` is never null. Prices are
decimal text, exact on SQLite and PostgreSQL alike (SQLite has no decimal type). Migration 0007
creates the same tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tracehouse.metadata.models import Base, UTCDateTime, utcnow


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True
    )
    model_name: Mapped[str] = mapped_column(sa.String, nullable=False)
    match_pattern: Mapped[str] = mapped_column(sa.String, nullable=False)
    start_date: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    unit: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    tokenizer_id: Mapped[str | None] = mapped_column(sa.String, nullable=True)
    tokenizer_config: Mapped[Any] = mapped_column(sa.JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)

    tiers: Mapped[list[PricingTierRow]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="PricingTierRow.priority"
    )

    # Langfuse refuses a second model of the same name in a project; the constraint closes the race.
    __table_args__ = (sa.UniqueConstraint("project_id", "model_name", name="uq_models_project_id_model_name"),)


class PricingTierRow(Base):
    __tablename__ = "pricing_tiers"

    id: Mapped[str] = mapped_column(sa.String, primary_key=True)
    model_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(sa.String, nullable=False)
    is_default: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    priority: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    conditions: Mapped[Any] = mapped_column(sa.JSON, nullable=False)

    model: Mapped[ModelRow] = relationship(back_populates="tiers")
    prices: Mapped[list[PriceRow]] = relationship(back_populates="tier", cascade="all, delete-orphan")

    __table_args__ = (
        sa.UniqueConstraint("model_id", "priority", name="uq_pricing_tiers_model_id_priority"),
        sa.UniqueConstraint("model_id", "name", name="uq_pricing_tiers_model_id_name"),
    )


class PriceRow(Base):
    __tablename__ = "prices"

    pricing_tier_id: Mapped[str] = mapped_column(
        sa.String, sa.ForeignKey("pricing_tiers.id", ondelete="CASCADE"), primary_key=True
    )
    usage_type: Mapped[str] = mapped_column(sa.String, primary_key=True)
    price: Mapped[str] = mapped_column(sa.String, nullable=False)  # USD per unit, decimal text

    tier: Mapped[PricingTierRow] = relationship(back_populates="prices")
