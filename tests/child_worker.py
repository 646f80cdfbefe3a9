"""A worker process for the multi-process tests (run as `python child_worker.py MODE ...`).

Modes:
- `stall QUEUE PREFIX REDIS_URL SLEEP_S`: consume QUEUE, record each start in a Redis list, then
  sleep SLEEP_S (the test SIGKILLs it mid-job to exercise stalled-job recovery).
- `cron PREFIX REDIS_URL DATABASE_URL PERIOD_MS`: run a test cron job through the real cron
  machinery (scheduler upsert, guard row, compare-and-set commit); its compute step sleeps a
  random moment so kills land mid-run.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from datetime import timedelta

from tracehouse.cron import CronSpec, cron_processor, register_schedules
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueProducer, QueueRunner, QueueSpec, RoleGroup, bullmq_connection, redis_client


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def stall(queue: str, prefix: str, redis_url: str, sleep_s: float) -> None:
    client = redis_client(redis_url)

    async def process(job, token):
        await client.rpush(f"{prefix}:test:starts", f"{job.id}")
        await asyncio.sleep(sleep_s)
        return "ok"

    spec = QueueSpec(queue, RoleGroup.INGESTION, lock_duration_ms=2000, stalled_interval_ms=1000, max_stalled_count=3)
    runner = QueueRunner(bullmq_connection(redis_url), [spec], {queue: process}, prefix=prefix, metrics=Metrics())
    await runner.start()
    print("ready", flush=True)
    await _until_signalled()
    await runner.shutdown(5)


async def cron(prefix: str, redis_url: str, database_url: str, period_ms: int) -> None:
    metadata = MetadataDB(database_url)

    async def compute(start, end):
        await asyncio.sleep(random.uniform(0, 0.6))
        return None

    spec = CronSpec(
        name="singleton-test",
        queue="singleton-cron-queue",
        period=timedelta(milliseconds=period_ms),
        repeat={"every": period_ms // 2},
        compute=compute,
        apply=lambda *a: None,
        stale_after=timedelta(seconds=3),
    )
    queue_spec = QueueSpec(
        spec.queue,
        RoleGroup.INGESTION,
        lock_duration_ms=2000,
        stalled_interval_ms=1000,
        max_stalled_count=5,
        job_options={"removeOnComplete": True, "removeOnFail": True},
    )
    connection = bullmq_connection(redis_url)
    runner = QueueRunner(
        connection, [queue_spec], {spec.queue: cron_processor(spec, metadata)}, prefix=prefix, metrics=Metrics()
    )
    await runner.start()
    producer = QueueProducer(connection, {spec.queue: queue_spec}, prefix=prefix)
    await register_schedules(producer.queue, [spec])
    await producer.close()
    print("ready", flush=True)
    await _until_signalled()
    await runner.shutdown(5)
    metadata.dispose()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "stall":
        asyncio.run(stall(args[0], args[1], args[2], float(args[3])))
    elif mode == "cron":
        asyncio.run(cron(args[0], args[1], args[2], int(args[3])))
    else:
        raise SystemExit(f"unknown mode {mode}")
