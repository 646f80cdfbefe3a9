"""Langfuse's time format at the edges of the calendar (the fuzz test found year 314 unpadded)."""

from datetime import UTC, datetime, timedelta, timezone

from tracehouse.timefmt import api_time, ch_time


def test_years_before_1000_keep_four_digits_and_offsets_become_utc() -> None:
    assert api_time(datetime(314, 5, 1, 21, 58, 23, 7000, tzinfo=UTC)) == "0314-05-01T21:58:23.007Z"
    assert ch_time(datetime(314, 5, 1, tzinfo=UTC)) == "0314-05-01 00:00:00.000"
    plus_two = datetime(2026, 11, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert api_time(plus_two) == "2026-11-01T12:00:00.123Z"
    assert ch_time(plus_two) == "2026-11-01 12:00:00.123"
    assert api_time(None) is None
