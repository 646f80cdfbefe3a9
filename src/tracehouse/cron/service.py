"""Scheduled work that runs exactly once per period, across any number of workers and restarts.

Three layers, each closing a hole the one before leaves open:

1. **One schedule.** A cron job is registered as a bullmq job scheduler upserted by id, so any
   number of workers registering it at start-up yields one schedule, and nothing is added "to run
   now" (the incident where every replica added its own schedule plus an immediate job).
2. **One runner at a time.** A row in `cron_jobs` is claimed with a conditional UPDATE
   (state QUEUED -> PROCESSING); a run that finds it PROCESSING and fresh skips. A PROCESSING row
   older than `stale_after` belongs to a crashed runner and is taken over.
3. **One commit per period.** Each period's effect is written in the same transaction that moves
   `cron_jobs.last_run` from the period's start to its end, with the old value as a condition.
   If two runners ever overlap (a takeover of a runner that was only slow), only one commit can
   succeed; the other rolls back. A run processes every period from `last_run` up to now, so
   ticks missed while no worker was up leave no gap.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracehouse.logging import get_logger
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import CronJob, CronRun

PROCESSING = "PROCESSING"
QUEUED = "QUEUED"


@dataclass(frozen=True)
class CronSpec:
    name: str
    queue: str
    period: timedelta
    repeat: dict[str, Any]  # bullmq repeat options: {"every": ms} or {"pattern": "5 * * * *"}
    compute: Callable[[datetime, datetime], Awaitable[Any]]  # read-only work for one period
    apply: Callable[[Session, datetime, datetime, Any], None]  # writes, inside the commit transaction
    stale_after: timedelta = timedelta(minutes=20)
    max_periods_per_run: int = 48
    settle: timedelta = timedelta(0)  # how long after a period ends before it is processed
    # For jobs whose periods have no lasting value of their own (a scheduler tick): after downtime,
    # jump to the latest period instead of replaying every missed one.
    skip_missed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CronOutcome:
    name: str
    claimed: bool
    periods: list[tuple[datetime, datetime]]


def floor_time(moment: datetime, period: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    steps = (moment - epoch) // period
    return epoch + steps * period


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CronGuard:
    """The `cron_jobs` row operations. Blocking; call from a thread."""

    def __init__(self, metadata: MetadataDB) -> None:
        self._metadata = metadata

    def claim(self, name: str, *, now: datetime, stale_after: timedelta) -> datetime | None:
        """Take the job for this run; returns the claim's token (its start time) or None to skip."""
        with self._metadata.session() as session:
            try:
                with session.begin_nested():
                    session.execute(insert(CronJob).values(name=name, state=QUEUED))
            except IntegrityError:
                pass  # the row exists already
            result: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(CronJob)
                .where(CronJob.name == name)
                .where(
                    (CronJob.state.is_(None))
                    | (CronJob.state != PROCESSING)
                    | (CronJob.job_started_at.is_(None))
                    | (CronJob.job_started_at < now - stale_after)
                )
                .values(state=PROCESSING, job_started_at=now)
            )
            return now if result.rowcount == 1 else None

    def release(self, name: str, token: datetime) -> None:
        with self._metadata.session() as session:
            session.execute(
                update(CronJob).where(CronJob.name == name, CronJob.job_started_at == token).values(state=QUEUED)
            )

    def last_run(self, name: str) -> datetime | None:
        with self._metadata.session() as session:
            return session.execute(select(CronJob.last_run).where(CronJob.name == name)).scalar_one_or_none()

    def start_from(self, name: str, initial: datetime) -> datetime:
        """`last_run`, set to `initial` first if the job has never run."""
        with self._metadata.session() as session:
            session.execute(
                update(CronJob).where(CronJob.name == name, CronJob.last_run.is_(None)).values(last_run=initial)
            )
            last_run = session.execute(select(CronJob.last_run).where(CronJob.name == name)).scalar_one()
            assert last_run is not None  # set just above when it was missing
            return last_run

    def skip_to(self, name: str, start: datetime, to: datetime) -> bool:
        with self._metadata.session() as session:
            moved: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(CronJob).where(CronJob.name == name, CronJob.last_run == start).values(last_run=to)
            )
            return moved.rowcount == 1

    def commit_period(
        self, spec: CronSpec, start: datetime, end: datetime, value: Any, worker: str, started_at: datetime
    ) -> bool:
        """Apply one period's effect and advance last_run, atomically and only from `start`."""
        with self._metadata.session() as session:
            moved: CursorResult[Any] = session.execute(  # type: ignore[assignment]
                update(CronJob).where(CronJob.name == spec.name, CronJob.last_run == start).values(last_run=end)
            )
            if moved.rowcount != 1:
                session.rollback()
                return False
            spec.apply(session, start, end, value)
            session.add(
                CronRun(
                    name=spec.name,
                    period_start=start,
                    period_end=end,
                    started_at=started_at,
                    finished_at=datetime.now(UTC),
                    worker=worker,
                )
            )
        return True


async def run_cron(
    spec: CronSpec, metadata: MetadataDB, *, worker: str | None = None, now: Callable[[], datetime] | None = None
) -> CronOutcome:
    """One tick: claim, process every due period, release. Safe to call from any number of workers."""
    clock = now or (lambda: datetime.now(UTC))
    worker = worker or worker_identity()
    log = get_logger("tracehouse.cron")
    guard = CronGuard(metadata)
    token = await asyncio.to_thread(guard.claim, spec.name, now=clock(), stale_after=spec.stale_after)
    if token is None:
        log.info("cron_skipped", cron=spec.name, reason="another run is in progress")
        return CronOutcome(spec.name, False, [])
    done: list[tuple[datetime, datetime]] = []
    try:
        initial = floor_time(clock(), spec.period) - spec.period
        start = await asyncio.to_thread(guard.start_from, spec.name, initial)
        if spec.skip_missed and start < initial and await asyncio.to_thread(guard.skip_to, spec.name, start, initial):
            log.info("cron_periods_skipped", cron=spec.name, skipped_from=start.isoformat(), to=initial.isoformat())
            start = initial
        while len(done) < spec.max_periods_per_run:
            end = start + spec.period
            if end + spec.settle > clock():
                break
            started_at = datetime.now(UTC)
            value = await spec.compute(start, end)
            committed = await asyncio.to_thread(guard.commit_period, spec, start, end, value, worker, started_at)
            if not committed:
                log.warning("cron_period_taken", cron=spec.name, period_start=start.isoformat())
                break
            log.info("cron_period_done", cron=spec.name, period_start=start.isoformat(), period_end=end.isoformat())
            done.append((start, end))
            start = end
    finally:
        await asyncio.to_thread(guard.release, spec.name, token)
    return CronOutcome(spec.name, True, done)


def cron_processor(spec: CronSpec, metadata: MetadataDB) -> Callable[[Any, str], Awaitable[Any]]:
    async def process(job: Any, token: str) -> dict[str, Any]:
        outcome = await run_cron(spec, metadata)
        return {"claimed": outcome.claimed, "periods": len(outcome.periods)}

    return process


async def register_schedules(queues: Callable[[str], Any], specs: list[CronSpec]) -> None:
    """Upsert one bullmq job scheduler per cron job (by id: idempotent across workers)."""
    for spec in specs:
        await queues(spec.queue).upsertJobScheduler(spec.name, spec.repeat, spec.name, {"cron": spec.name})
