"""Usage rows and the `GET /api/public/usage` answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class HourUsage:
    project_id: str
    hour: datetime
    traces: int
    observations: int
    scores: int


class UsageHour(BaseModel):
    hour: str = Field(description="Start of the hour (UTC, ISO 8601)")
    traces: int
    observations: int
    scores: int


class UsageTotals(BaseModel):
    traces: int
    observations: int
    scores: int


class UsageMeta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    project_id: str = Field(alias="projectId")
    hours: int
    totals: UsageTotals


class UsageResponse(BaseModel):
    data: list[UsageHour]
    meta: UsageMeta
