"""The two ways tracehouse writes a timestamp: for JSON answers and for ClickHouse parameters."""

from __future__ import annotations

from datetime import UTC, datetime


def api_time(value: datetime | None) -> str | None:
    """Langfuse's JSON form: UTC, milliseconds, `Z` (2026-11-01T12:00:00.000Z)."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    # The year by hand: strftime's %Y does not pad years before 1000 on glibc ("314-05-01").
    return f"{value.year:04d}" + value.strftime("-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def ch_time(value: datetime) -> str:
    """A `DateTime64(3)` query parameter, in UTC."""
    value = value.astimezone(UTC)
    return f"{value.year:04d}" + value.strftime("-%m-%d %H:%M:%S.%f")[:-3]


def within_datetime64(moment: datetime) -> bool:
    """Whether an aware moment lies in ClickHouse's DateTime64 range (1900-01-01 .. 2299-12-31 UTC).
    Converting an edge value such as 0001-01-01T00:00+01:00 to UTC overflows: that is out of range too."""
    try:
        year = moment.astimezone(UTC).year
    except OverflowError:
        return False
    return 1900 <= year <= 2299
