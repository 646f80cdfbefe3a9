"""Queue runtime overhead: no-op jobs/s through tracehouse's QueueRunner vs bare bullmq, same run.

    .venv/bin/python bench/queue_throughput.py [--jobs 10000] [--rounds 3] [--redis redis://127.0.0.1:6379/0]
                                               [--quick] [--results-dir DIR] [--no-record]

Without --redis an embedded redis-server is started. Each round runs both variants on fresh
queues; the report gives per-variant medians and the ratio ours/raw (target: >= 0.8, i.e. our
overhead costs under 20%). Figures go to bench/results/queue_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bullmq import Queue, Worker

from tracehouse.metrics import Metrics
from tracehouse.queues import QueueRunner, QueueSpec, RoleGroup, bullmq_connection, redis_client
from tracehouse.queues.activity import ActivityTracker
from tracehouse.redis_embedded import EmbeddedRedis

if __package__:  # python -m bench.queue_throughput
    from bench import common
else:  # python bench/queue_throughput.py: bench/ is on sys.path
    import common

CONCURRENCY = 50


async def _fill(connection: dict, prefix: str, name: str, jobs: int) -> Queue:
    queue = Queue(name, {"connection": dict(connection), "prefix": prefix})
    for start in range(0, jobs, 1000):
        await queue.addBulk(
            [
                {"name": "noop", "data": {"i": i}, "opts": {"removeOnComplete": True}}
                for i in range(start, min(jobs, start + 1000))
            ]
        )
    return queue


async def _drain(queue: Queue, jobs: int) -> None:
    while True:
        counts = await queue.getJobCounts("waiting", "active")
        if counts["waiting"] == 0 and counts["active"] == 0:
            return
        await asyncio.sleep(0.02)


def _counting_noop(jobs: int) -> tuple[Any, asyncio.Event]:
    """A processor that does nothing but signal when the last of `jobs` has run."""
    done = asyncio.Event()
    count = 0

    async def noop(job: Any, token: str) -> None:
        nonlocal count
        count += 1
        if count == jobs:
            done.set()

    return noop, done


async def run_raw(connection: dict, jobs: int) -> float:
    prefix, name = f"bench-{secrets.token_hex(3)}", "raw"
    queue = await _fill(connection, prefix, name, jobs)
    noop, done = _counting_noop(jobs)
    started = time.perf_counter()
    # The same functional fixes our runtime applies (socket timeout; version probe), nothing else.
    worker = Worker(
        name,
        noop,
        {
            "connection": dict(connection),
            "prefix": prefix,
            "concurrency": CONCURRENCY,
            "autorun": False,
            "drainDelay": 1,
        },
    )
    await worker.blockingRedisConnection.getRedisVersion()
    runner = asyncio.ensure_future(worker.run())
    await done.wait()
    await _drain(queue, jobs)
    elapsed = time.perf_counter() - started
    await worker.close()
    await runner
    await queue.obliterate({"force": True})
    await queue.close()
    return jobs / elapsed


async def run_ours(connection: dict, redis_url: str, jobs: int) -> float:
    prefix, name = f"bench-{secrets.token_hex(3)}", "ours"
    queue = await _fill(connection, prefix, name, jobs)
    noop, done = _counting_noop(jobs)
    spec = QueueSpec(name, RoleGroup.INGESTION, concurrency=CONCURRENCY)
    client = redis_client(redis_url)
    started = time.perf_counter()
    runner = QueueRunner(
        connection, [spec], {name: noop}, prefix=prefix, metrics=Metrics(), activity=ActivityTracker(client, prefix)
    )
    await runner.start()
    await done.wait()
    await _drain(queue, jobs)
    elapsed = time.perf_counter() - started
    await runner.shutdown(10)
    await queue.obliterate({"force": True})
    await queue.close()
    await client.aclose()
    return jobs / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", default=None)
    common.add_options(parser)
    args = parser.parse_args()
    common.apply_quick(parser, args, {"jobs": 500, "rounds": 1})
    recorder = common.Recorder("queue_throughput", args)
    embedded = None
    redis_url = args.redis
    scratch = None
    if redis_url is None:
        scratch = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        embedded = EmbeddedRedis(scratch)
        embedded.start()
        redis_url = embedded.url
    connection = bullmq_connection(redis_url)
    raw, ours = [], []
    try:
        for round_no in range(args.rounds):
            raw.append(await run_raw(connection, args.jobs))
            ours.append(await run_ours(connection, redis_url, args.jobs))
            print(f"round {round_no + 1}: raw bullmq {raw[-1]:,.0f} jobs/s, tracehouse {ours[-1]:,.0f} jobs/s")
    finally:
        if embedded:
            embedded.stop()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    raw_median, ours_median = statistics.median(raw), statistics.median(ours)
    ratio = ours_median / raw_median
    print(f"median raw bullmq: {raw_median:,.0f} jobs/s  (concurrency {CONCURRENCY}, {args.jobs} no-op jobs)")
    print(f"median tracehouse: {ours_median:,.0f} jobs/s")
    print(f"ratio tracehouse/raw: {ratio:.2f}  (target >= 0.80)")
    recorder.write(
        parameters={
            "jobs": args.jobs,
            "rounds": args.rounds,
            "concurrency": CONCURRENCY,
            "redis": common.redact_url(args.redis),
        },
        figures={
            "bare_bullmq_jobs_per_s": raw,
            "tracehouse_jobs_per_s": ours,
            "bare_bullmq_median_jobs_per_s": raw_median,
            "tracehouse_median_jobs_per_s": ours_median,
        },
        ratios={"tracehouse_over_bare_bullmq": ratio},
        targets=[
            common.target(
                "queue: jobs/s vs bare bullmq",
                ratio,
                ">=",
                0.8,
                "ratio",
                f"median no-op jobs/s through QueueRunner over bare bullmq Worker, concurrency {CONCURRENCY}",
            )
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
