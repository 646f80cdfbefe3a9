"""Usage metering: traces, observations and scores created per project per hour.

Runs as an exactly-once cron job on `cloud-usage-metering-queue` (Langfuse's name) a few minutes
after each hour, counting rows by `created_at` for the previous full hour. Each hour's counts
replace whatever was stored for it, so a re-run of an hour is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.cron import CronSpec
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import UsageHourly
from tracehouse.timefmt import ch_time

USAGE_CRON = "usage-metering"
USAGE_QUEUE = "cloud-usage-metering-queue"
KINDS = ("traces", "observations", "scores")

# Unique ids, not rows: an entity updated three times in the hour counts once. Deleted rows too.
_COUNT_SQL = " UNION ALL ".join(
    f"SELECT project_id, '{table}' AS kind, uniqExact(id) AS n FROM {table} "
    "WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)} GROUP BY project_id"
    for table in KINDS
)


@dataclass(frozen=True)
class HourUsage:
    project_id: str
    hour: datetime
    traces: int
    observations: int
    scores: int


async def count_created(clickhouse: ClickHouse, start: datetime, end: datetime) -> dict[str, dict[str, int]]:
    """project -> {kind: count} for rows created in [start, end)."""
    rows = await clickhouse.query(
        _COUNT_SQL,
        {"start": ch_time(start), "end": ch_time(end)},
        # Background bookkeeping: the ingestion class, never the interactive one users wait on.
        workload=Workload.INGESTION,
    )
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["project_id"], dict.fromkeys(KINDS, 0))[row["kind"]] = int(row["n"])
    return counts


def store_hour(session: Session, start: datetime, _end: datetime, counts: dict[str, dict[str, int]]) -> None:
    session.execute(delete(UsageHourly).where(UsageHourly.hour == start))
    for project_id, by_kind in counts.items():
        session.add(UsageHourly(project_id=project_id, hour=start, **by_kind))


def usage_cron(
    clickhouse: ClickHouse, *, period: timedelta = timedelta(hours=1), repeat: dict | None = None
) -> CronSpec:
    async def compute(start: datetime, end: datetime) -> dict[str, dict[str, int]]:
        return await count_created(clickhouse, start, end)

    return CronSpec(
        name=USAGE_CRON,
        queue=USAGE_QUEUE,
        period=period,
        repeat=repeat or {"pattern": "5 * * * *"},
        compute=compute,
        apply=store_hour,
        # Rows of an hour may still arrive for a short while after it ends.
        settle=min(timedelta(minutes=5), period / 2),
    )


def usage_for_project(
    metadata: MetadataDB, project_id: str, start: datetime | None, end: datetime | None
) -> list[HourUsage]:
    query = select(UsageHourly).where(UsageHourly.project_id == project_id)
    if start is not None:
        query = query.where(UsageHourly.hour >= start)
    if end is not None:
        query = query.where(UsageHourly.hour < end)
    with metadata.session() as session:
        return [
            HourUsage(r.project_id, r.hour, r.traces, r.observations, r.scores)
            for r in session.execute(query.order_by(UsageHourly.hour)).scalars()
        ]
