"""Usage metering: traces, observations and scores created per project per hour.

Counts rows by `created_at` for one hour; each hour's counts replace whatever was stored for it,
so a re-run of an hour is harmless. The cron that runs it lives in `worker.py`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.metadata import MetadataDB
from tracehouse.metadata.models import UsageHourly
from tracehouse.timefmt import ch_time
from tracehouse.usage.models import HourUsage

KINDS = ("traces", "observations", "scores")

# Unique ids, not rows: an entity updated three times in the hour counts once. Deleted rows too.
_COUNT_SQL = " UNION ALL ".join(
    f"SELECT project_id, '{table}' AS kind, uniqExact(id) AS n FROM {table} "
    "WHERE created_at >= {start:DateTime64(3)} AND created_at < {end:DateTime64(3)} GROUP BY project_id"
    for table in KINDS
)


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
