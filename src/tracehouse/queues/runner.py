"""Run bullmq workers for a set of queues, and stop them gracefully.

Workarounds applied to every worker (see the dependency evaluation):
- the blocking connection's Redis version is probed before the worker runs, otherwise bullmq rounds
  every block timeout, delay and backoff up to whole seconds;
- `drainDelay` is 1 s, so a worker that hit a rate limit or global concurrency retries promptly;
- connections set `socket_timeout=None` (see `connection.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bullmq import Queue, Worker

from tracehouse.logging import get_logger
from tracehouse.queues.registry import QueueSpec

Processor = Callable[[Any, str], Awaitable[Any]]


class QueueRunner:
    """Consumes the given queues with the given processors until `shutdown`."""

    def __init__(
        self,
        connection: dict[str, Any],
        specs: list[QueueSpec],
        processors: Mapping[str, Processor],
        *,
        prefix: str = "bull",
        logger: Any = None,
    ) -> None:
        missing = [s.name for s in specs if s.name not in processors]
        if missing:
            raise ValueError(f"no processor registered for queue(s): {', '.join(missing)}")
        self._connection = connection
        self._specs = specs
        self._processors = processors
        self._prefix = prefix
        self._log = logger or get_logger("tracehouse.queues")
        self.workers: dict[str, Worker] = {}
        self._runs: list[asyncio.Future[Any]] = []

    @property
    def queue_names(self) -> list[str]:
        return [s.name for s in self._specs]

    async def start(self) -> None:
        for spec in self._specs:
            worker = Worker(
                spec.name,
                self._processors[spec.name],
                {
                    "connection": dict(self._connection),
                    "prefix": self._prefix,
                    "concurrency": spec.concurrency,
                    "lockDuration": spec.lock_duration_ms,
                    "stalledInterval": spec.stalled_interval_ms,
                    "maxStalledCount": spec.max_stalled_count,
                    "drainDelay": 1,
                    "autorun": False,
                },
            )
            worker.on("error", lambda err, name=spec.name: self._log.error("queue_worker_error", queue=name,
                                                                            error=str(err)[:500]))
            await worker.blockingRedisConnection.getRedisVersion()
            self.workers[spec.name] = worker
            self._runs.append(asyncio.ensure_future(worker.run()))

    async def shutdown(self, timeout_s: float) -> bool:
        """Stop taking jobs, wait up to `timeout_s` for running ones, then close.

        Returns True when every running job finished in time. Jobs still running at the deadline
        are abandoned, not failed: their locks expire and another worker picks them up.
        """
        if not self.workers:
            return True
        closing = [asyncio.ensure_future(w.close()) for w in self.workers.values()]
        done, pending = await asyncio.wait(closing, timeout=timeout_s)
        clean = not pending
        if pending:
            self._log.warning("worker_shutdown_timeout", timeout_s=timeout_s,
                              queues=[n for n, w in self.workers.items() if not w.closed])
            await asyncio.gather(*(w.close(force=True) for w in self.workers.values() if not w.closed),
                                 return_exceptions=True)
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._runs, return_exceptions=True)
        self.workers.clear()
        self._runs.clear()
        return clean


class QueueProducer:
    """Adds jobs to queues with each queue's default options from the registry."""

    def __init__(self, connection: dict[str, Any], specs: Mapping[str, QueueSpec], *, prefix: str = "bull") -> None:
        self._connection = connection
        self._specs = specs
        self._prefix = prefix
        self._queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        if name not in self._queues:
            if name not in self._specs:
                raise KeyError(f"unknown queue {name!r}")
            self._queues[name] = Queue(name, {"connection": dict(self._connection), "prefix": self._prefix})
        return self._queues[name]

    async def add(self, queue: str, job_name: str, data: dict[str, Any], **options: Any) -> Any:
        opts = {**self._specs[queue].job_options, **options}
        return await self.queue(queue).add(job_name, data, opts)

    async def close(self) -> None:
        await asyncio.gather(*(q.close() for q in self._queues.values()), return_exceptions=True)
        self._queues.clear()
