"""Queue health: red when Redis is gone or a queue stops moving, not merely when a process dies.

A queue is *stuck* when it has waiting jobs, consumers are expected for it, and nothing on it has
started or finished for longer than the threshold (measured from the later of its last activity
and its oldest waiting job). This is the "workers look healthy but consumed nothing for days"
failure that a process-liveness probe cannot see.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tracehouse.errors import one_line_reason
from tracehouse.metrics import Metrics
from tracehouse.queues.activity import last_activity

STATES = ("waiting", "active", "delayed", "completed", "failed")


@dataclass(frozen=True)
class QueueHealth:
    healthy: bool
    body: dict[str, Any]


async def _counts(client: aioredis.Redis, prefix: str, queue: str) -> dict[str, int]:
    # Read bullmq's keys directly: one pipeline for all states, no Queue object per check.
    base = f"{prefix}:{queue}"
    pipe = client.pipeline(transaction=False)
    pipe.llen(f"{base}:wait")
    pipe.zcard(f"{base}:prioritized")
    pipe.llen(f"{base}:active")
    pipe.zcard(f"{base}:delayed")
    pipe.zcard(f"{base}:completed")
    pipe.zcard(f"{base}:failed")
    wait, prioritized, active, delayed, completed, failed = await pipe.execute()
    return {
        "waiting": int(wait) + int(prioritized),
        "active": int(active),
        "delayed": int(delayed),
        "completed": int(completed),
        "failed": int(failed),
    }


async def _oldest_waiting_ms(client: aioredis.Redis, prefix: str, queue: str) -> int | None:
    # New jobs are pushed on the left and taken from the right, so the oldest is at index -1.
    job_id = await client.lindex(f"{prefix}:{queue}:wait", -1)
    if job_id is None:
        return None
    stamp = await client.hget(f"{prefix}:{queue}:{job_id!s}", "timestamp")
    return int(stamp) if stamp else None


async def check_queues(
    client: aioredis.Redis,
    prefix: str,
    *,
    queues: list[str],
    expected: list[str],
    stuck_after_s: float,
    worker_running: bool | None = None,
    worker_concurrency: dict[str, int] | None = None,
    metrics: Metrics,
) -> QueueHealth:
    """Health of `queues`; only queues in `expected` (those that should have consumers) can be stuck."""
    try:
        await asyncio.wait_for(client.ping(), timeout=2)
    except Exception as exc:  # noqa: BLE001 - unreachable for any reason is unhealthy
        down = {
            "healthy": False,
            "redis": False,
            "queue": False,
            "worker": bool(worker_running),
            "details": {"redis_status": "unreachable", "error": one_line_reason(exc)},
        }
        return QueueHealth(False, down)

    counts = dict(zip(queues, await asyncio.gather(*(_counts(client, prefix, q) for q in queues)), strict=True))
    activity = await last_activity(client, prefix)
    now_ms = int(time.time() * 1000)
    stuck: dict[str, dict[str, Any]] = {}
    for queue in expected:
        if counts.get(queue, {}).get("waiting", 0) == 0:
            continue
        seen = activity.get(queue, {})
        last_move = max(seen.get("started", 0), seen.get("completed", 0), seen.get("failed", 0))
        oldest = await _oldest_waiting_ms(client, prefix, queue)
        # A queue is idle legitimately until work arrives; measure from whichever came later.
        since = max(last_move, oldest or now_ms)
        idle_s = (now_ms - since) / 1000
        if idle_s > stuck_after_s:
            stuck[queue] = {
                "waiting": counts[queue]["waiting"],
                "idle_seconds": round(idle_s, 1),
                "last_activity_ms": last_move or None,
            }
    for queue, by_state in counts.items():
        for state, value in by_state.items():
            metrics.set_depth(queue, state, value)
    worker_ok = True if worker_running is None else worker_running
    healthy = not stuck and worker_ok
    details: dict[str, Any] = {
        "redis_status": "ready",
        "queue_counts": counts,
        "stuck_queues": stuck,
        "stuck_threshold_seconds": stuck_after_s,
    }
    if worker_concurrency is not None:
        details["worker_concurrency"] = worker_concurrency
    body = {"healthy": healthy, "redis": True, "queue": not stuck, "worker": worker_ok, "details": details}
    return QueueHealth(healthy, body)
