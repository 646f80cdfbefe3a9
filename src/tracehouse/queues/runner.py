"""Run bullmq workers for a set of queues, and stop them gracefully.

Workarounds applied to every worker (see the dependency evaluation):
- the blocking connection's Redis version is probed before the worker runs, otherwise bullmq rounds
  every block timeout, delay and backoff up to whole seconds;
- `drainDelay` is 1 s, so a worker that hit a rate limit or global concurrency retries promptly;
- connections set `socket_timeout=None` (see `connection.py`);
- locks are renewed every quarter of their duration, not every half, so a starved process keeps
  three quarters of a lock as margin instead of half;
- a job that lost its lock and is re-run by the same worker keeps its renewal (`RerunSafeLockManager`);
- a job failed by the stall limit (bullmq never calls the processor for it) is logged and handed to
  the processor's `abandoned` hook, so it can be dead-lettered like any other final failure.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bullmq import Queue, Worker
from bullmq.custom_errors import UnrecoverableError
from bullmq.lock_manager import LockManager

from tracehouse.logging import get_logger
from tracehouse.metrics import Metrics
from tracehouse.queues.activity import ActivityTracker
from tracehouse.queues.registry import QueueSpec

Processor = Callable[[Any, str], Awaitable[Any]]

MAX_ERROR_CHARS = 2_000  # what a failed job keeps of its error in Redis
MAX_RESULT_CHARS = 16_000  # what a completed job keeps of its return value


class JobFailed(Exception):
    """The stored form of a processor's error: type and message, truncated, no long traceback."""


def _bounded_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 15] + "... [truncated]"


def _bounded_result(result: Any) -> Any:
    text = json.dumps(result, default=str)
    if len(text) <= MAX_RESULT_CHARS:
        return result
    return {"truncated": True, "chars": len(text), "preview": text[:500]}


class RerunSafeLockManager(LockManager):
    """bullmq's lock manager, counting runs per job id.

    bullmq tracks renewals by job id alone. When a job's lock lapses (a starved process) the stall
    check hands it out again, often to the same worker while the first run still goes on; the first
    run's untrack then drops the re-run's renewal, its lock lapses in turn, and the job stalls again
    and again until bullmq fails it. Here an untrack only forgets the job once no run of it is left.
    The newest run's token is the one renewed: older runs lost their lock by definition.
    """

    def __init__(self, worker: Worker) -> None:
        opts = worker.opts
        super().__init__(worker, opts["lockRenewTime"], opts["lockDuration"], worker.id, worker.workerName)
        self._runs: dict[str, int] = {}

    def track_job(self, job_id: str, token: str, ts: int, should_create_controller: bool = False) -> Any:
        self._runs[job_id] = self._runs.get(job_id, 0) + 1
        return super().track_job(job_id, token, ts, should_create_controller=should_create_controller)

    def untrack_job(self, job_id: str) -> None:
        left = self._runs.pop(job_id, 1) - 1
        if left > 0:
            self._runs[job_id] = left
        else:
            super().untrack_job(job_id)


def instrument(
    queue: str, processor: Processor, *, metrics: Metrics, activity: ActivityTracker | None, log: Any
) -> Processor:
    """Wrap a processor with metrics, activity tracking and bounded errors and results."""

    async def run(job: Any, token: str) -> Any:
        started = time.perf_counter()
        metrics.job_started(queue)
        if activity:
            await activity.touch(queue, "started")
        try:
            result = await processor(job, token)
        except Exception as exc:
            metrics.job_finished(queue, "failed", time.perf_counter() - started)
            if activity:
                await activity.touch(queue, "failed")
            stored = _bounded_error(exc)
            # The traceback is logged bounded too: a processor's error can carry megabytes.
            trace = "".join(traceback.format_exception(exc))[-MAX_ERROR_CHARS * 2 :]
            log.warning(
                "job_failed", queue=queue, job_id=job.id, attempt=job.attemptsMade + 1, error=stored, traceback=trace
            )
            if isinstance(exc, UnrecoverableError):
                raise UnrecoverableError(stored) from None
            raise JobFailed(stored) from None
        metrics.job_finished(queue, "completed", time.perf_counter() - started)
        if activity:
            await activity.touch(queue, "completed")
        return _bounded_result(result)

    return run


class QueueRunner:
    """Consumes the given queues with the given processors until `shutdown`."""

    def __init__(
        self,
        connection: dict[str, Any],
        specs: list[QueueSpec],
        processors: Mapping[str, Processor],
        *,
        metrics: Metrics,
        prefix: str = "bull",
        logger: Any = None,
        activity: ActivityTracker | None = None,
    ) -> None:
        missing = [s.name for s in specs if s.name not in processors]
        if missing:
            raise ValueError(f"no processor registered for queue(s): {', '.join(missing)}")
        self._connection = connection
        self._specs = specs
        self._processors = processors
        self._prefix = prefix
        self._log = logger or get_logger("tracehouse.queues")
        self._metrics = metrics
        self._activity = activity
        self.workers: dict[str, Worker] = {}
        self._started = False
        self.after_close: list[Callable[[], Awaitable[Any]]] = []  # e.g. flush a writer
        self._runs: list[asyncio.Future[Any]] = []
        self._abandoning: set[asyncio.Future[Any]] = set()

    @property
    def queue_names(self) -> list[str]:
        return [s.name for s in self._specs]

    @property
    def concurrency(self) -> dict[str, int]:
        return {s.name: s.concurrency for s in self._specs}

    @property
    def running(self) -> bool:
        """All workers started and still consuming (none crashed or closing)."""
        return self._started and all(
            w.running and not w.closing and not run.done()
            for w, run in zip(self.workers.values(), self._runs, strict=True)
        )

    async def start(self) -> None:
        for spec in self._specs:
            processor = instrument(
                spec.name, self._processors[spec.name], metrics=self._metrics, activity=self._activity, log=self._log
            )
            worker = Worker(
                spec.name,
                processor,
                {
                    "connection": dict(self._connection),
                    "prefix": self._prefix,
                    "concurrency": spec.concurrency,
                    "lockDuration": spec.lock_duration_ms,
                    "lockRenewTime": max(1, spec.lock_duration_ms // 4),
                    "stalledInterval": spec.stalled_interval_ms,
                    "maxStalledCount": spec.max_stalled_count,
                    "drainDelay": 1,
                    "autorun": False,
                },
            )
            worker.lockManager = RerunSafeLockManager(worker)
            # bullmq emits ("error", err) and ("error", err, job).
            worker.on(
                "error",
                lambda err, *_, name=spec.name: self._log.error("queue_worker_error", queue=name, error=str(err)[:500]),
            )
            worker.on("failed", lambda job, err, *_, name=spec.name: self._on_failed(name, job, err))
            await worker.blockingRedisConnection.getRedisVersion()
            self.workers[spec.name] = worker
            run = asyncio.ensure_future(worker.run())
            self._runs.append(run)
            # Wait until the run loop has named its connections: closed before that, a worker would
            # reopen them afterwards and leak them.
            while not worker.running and not run.done():  # noqa: ASYNC110 - bullmq has no event for it
                await asyncio.sleep(0.005)
        self._started = True

    def _on_failed(self, queue: str, job: Any, err: BaseException) -> None:
        """Final failures the processor never saw: bullmq fails a job that stalled too often without
        running it (`deferredFailure`). Log it, and let the processor record it (a dead letter)."""
        if not getattr(job, "deferredFailure", None):
            return  # the processor ran and `instrument` logged it
        self._log.warning("job_abandoned", queue=queue, job_id=job.id, reason=str(job.deferredFailure))
        hook = getattr(self._processors[queue], "abandoned", None)
        if hook is not None:
            task = asyncio.ensure_future(self._run_abandoned(queue, hook, job))
            self._abandoning.add(task)
            task.add_done_callback(self._abandoning.discard)

    async def _run_abandoned(self, queue: str, hook: Callable[[Any], Awaitable[Any]], job: Any) -> None:
        try:
            await hook(job)
        except Exception as exc:  # noqa: BLE001 - logged; the job stays in the failed set either way
            self._log.error("job_abandoned_hook_failed", queue=queue, job_id=job.id, error=_bounded_error(exc))

    async def shutdown(self, timeout_s: float) -> bool:
        """Stop taking jobs, wait up to `timeout_s` for running ones, then close.

        Returns True when every running job finished in time. Jobs still running at the deadline
        are abandoned, not failed: their locks expire and another worker picks them up.
        """
        self._started = False
        if not self.workers:
            for hook in self.after_close:
                await hook()
            return True
        closing = [asyncio.ensure_future(w.close()) for w in self.workers.values()]
        done, pending = await asyncio.wait(closing, timeout=timeout_s)
        clean = not pending
        if pending:
            self._log.warning(
                "worker_shutdown_timeout",
                timeout_s=timeout_s,
                queues=[n for n, w in self.workers.items() if not w.closed],
            )
            await asyncio.gather(
                *(w.close(force=True) for w in self.workers.values() if not w.closed), return_exceptions=True
            )
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.gather(*self._runs, return_exceptions=True)
        await asyncio.gather(*self._abandoning, return_exceptions=True)
        for hook in self.after_close:
            await hook()
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
