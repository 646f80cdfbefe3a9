"""The two ways tracehouse writes a timestamp: for JSON answers and for ClickHouse parameters."""

from __future__ import annotations

from datetime import UTC, datetime


def api_time(value: datetime | None) -> str | None:
    """Langfuse's JSON form: UTC, milliseconds, `Z` (2026-11-01T12:00:00.000Z)."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def ch_time(value: datetime) -> str:
    """A `DateTime64(3)` query parameter, in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
