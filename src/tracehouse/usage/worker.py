"""Usage metering's queue side: an exactly-once hourly cron on `cloud-usage-metering-queue`.

It runs a few minutes after each hour (Langfuse's queue name) and stores the previous full hour.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tracehouse.clickhouse import ClickHouse
from tracehouse.cron import CronSpec
from tracehouse.queues import QueueSpec, RoleGroup, retry_options
from tracehouse.usage.service import count_created, store_hour

USAGE_CRON = "usage-metering"
USAGE_QUEUE = "cloud-usage-metering-queue"

QUEUES = [QueueSpec(USAGE_QUEUE, RoleGroup.INGESTION, job_options=retry_options(3, 5_000))]


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
