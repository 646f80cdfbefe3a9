"""When did each queue last start or finish a job? Kept in Redis so every process can see it.

This is what lets health notice a queue whose workers look alive but consume nothing. Writes are
throttled per process (one per queue and kind per second), so the cost does not grow with
throughput.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis


def activity_key(prefix: str) -> str:
    return f"{prefix}:tracehouse:activity"


class ActivityTracker:
    def __init__(self, client: aioredis.Redis, prefix: str, *, min_interval_s: float = 1.0) -> None:
        self._client = client
        self._key = activity_key(prefix)
        self._min_interval_s = min_interval_s
        self._last_write: dict[str, float] = {}

    async def touch(self, queue: str, kind: str) -> None:
        field = f"{queue}:{kind}"
        now = time.time()
        if now - self._last_write.get(field, 0.0) < self._min_interval_s:
            return
        self._last_write[field] = now
        await self._client.hset(self._key, field, str(int(now * 1000)))


async def last_activity(client: aioredis.Redis, prefix: str) -> dict[str, dict[str, int]]:
    """queue -> {"started": ms, "completed": ms, "failed": ms} (only the kinds seen)."""
    raw: dict[Any, Any] = await client.hgetall(activity_key(prefix))
    result: dict[str, dict[str, int]] = {}
    for field, value in raw.items():
        queue, _, kind = str(field).rpartition(":")
        result.setdefault(queue, {})[kind] = int(value)
    return result
