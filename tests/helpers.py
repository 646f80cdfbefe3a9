"""Helpers shared by the ingestion tests."""

import asyncio
import dataclasses
import time

from tracehouse.clickhouse import Workload
from tracehouse.settings import WorkerRole
from tracehouse.workers import start_workers


async def rows_of(services, table, project_id, where="1"):
    return await services.clickhouse.query(
        f"SELECT * FROM {table} FINAL WHERE project_id = {{p:String}} AND {where} ORDER BY id",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )


async def until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def start_ingestion(services, clickhouse=None):
    """Ingestion workers over the given services (optionally a fault-injecting ClickHouse)."""
    svc = dataclasses.replace(services, clickhouse=clickhouse) if clickhouse else services
    return await start_workers(svc, WorkerRole.INGESTION, crons=[])
