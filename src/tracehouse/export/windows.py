"""Export windows: which stretch of written rows a job exports next.

A window is half-open, `[start, end)`, over `event_ts` (when a row version was written). Two
consecutive windows share no instant, so a row version belongs to exactly one window; a row updated
after its window was exported gets a new `event_ts` and so lands in a later window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ExportWindow:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"empty export window {self.start} .. {self.end}")

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def start_ms(self) -> int:
        return to_ms(self.start)

    @property
    def end_ms(self) -> int:
        return to_ms(self.end)

    def halves(self) -> tuple[ExportWindow, ExportWindow]:
        middle = from_ms(self.start_ms + (self.end_ms - self.start_ms) // 2)
        return ExportWindow(self.start, middle), ExportWindow(middle, self.end)

    @property
    def stamp(self) -> str:
        """File-name part naming the window; millisecond precision, so two windows never collide."""
        return f"{file_time(self.start)}_{file_time(self.end)}"

    def as_json(self) -> dict[str, str]:
        return {"start": iso_ms(self.start), "end": iso_ms(self.end)}


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_time(moment: datetime) -> str:
    # ISO 8601 basic-ish, safe in every object store and sorting chronologically.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%S-") + f"{moment.microsecond // 1000:03d}Z"


def floor_to(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + ((moment - EPOCH) // step) * step


@dataclass(frozen=True)
class WindowPlan:
    """What the next job does: export `window`, or (window None) wait until `next_run`."""

    window: ExportWindow | None
    catching_up: bool
    next_run: datetime | None = None


def plan_window(
    cursor: datetime, *, frequency: timedelta, catchup: timedelta, horizon: datetime, lag: timedelta
) -> WindowPlan:
    """The next window after `cursor`, given that rows before `horizon` are all visible.

    Only whole periods are exported in steady state, so an hourly integration writes one file set
    per hour and runs once per hour. More than one period behind, the job catches up in chunks of
    `catchup` (when smaller than the period) and re-enqueues itself until caught up.
    """
    if cursor + frequency > horizon:
        return WindowPlan(None, False, next_run=cursor + frequency + lag)
    behind = cursor + 2 * frequency <= horizon
    chunk = min(frequency, catchup) if behind and catchup > timedelta(0) else frequency
    return WindowPlan(ExportWindow(cursor, cursor + chunk), behind)


def skippable_until(
    cursor: datetime, *, first_row: datetime | None, horizon: datetime, chunk: timedelta
) -> datetime | None:
    """The end of the empty stretch starting at `cursor`, in whole chunks, or None if there is none.

    `first_row` is the earliest `event_ts` at or after the cursor in any exported table. A project
    whose data starts last week is not walked from 1970 in 15-minute steps: the whole empty stretch
    becomes one window (with an empty manifest) in one step.
    """
    limit = min(first_row, horizon) if first_row is not None else horizon
    steps = (limit - cursor) // chunk
    return cursor + steps * chunk if steps >= 2 else None
