"""The job system against real Redis: roles, retries, retention, progress, errors, stalls, health."""

import asyncio
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from bullmq import Queue
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tracehouse.capabilities import QUEUES
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueRunner, QueueSpec, RoleGroup, redis_client
from tracehouse.queues.activity import ActivityTracker
from tracehouse.queues.health import check_queues
from tracehouse.settings import WorkerRole
from tracehouse.web.app import create_app
from tracehouse.workers import start_workers

CHILD = Path(__file__).with_name("child_worker.py")


async def _wait(predicate, timeout=15.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return False


def _queue(services, name):
    return Queue(name, {"connection": services.redis_connection, "prefix": services.settings.redis_key_prefix})


@pytest.mark.parametrize("role", [WorkerRole.INGESTION, WorkerRole.EXPORT, WorkerRole.ALL])
async def test_each_role_consumes_exactly_its_queues(services, role):
    seen: list[str] = []

    def recorder(name):
        async def process(job, token):
            seen.append(name)

        return process

    processors = {name: recorder(name) for name in QUEUES}
    queues = {name: _queue(services, name) for name in QUEUES}
    for q in queues.values():
        await q.add("probe", {}, {})
    runner = await start_workers(services, role, processors=processors, crons=[])
    expected = {s.name for s in QUEUES.values() if role == WorkerRole.ALL or s.group.value == role.value}
    try:
        assert set(runner.queue_names) == expected
        assert await _wait(lambda: asyncio.sleep(0, set(seen) == expected))
        await asyncio.sleep(0.5)  # give a wrongly-gated worker time to show itself
        assert sorted(seen) == sorted(expected)
        for name, q in queues.items():
            counts = await q.getJobCounts("waiting", "completed")
            assert counts == ({"waiting": 0, "completed": 1} if name in expected else {"waiting": 1, "completed": 0})
    finally:
        await runner.shutdown(5)
        for q in queues.values():
            await q.close()


async def test_per_queue_flag_switches_a_consumer_off(services):
    processors = {name: (lambda job, token: asyncio.sleep(0)) for name in QUEUES}
    settings = services.settings.model_copy(update={"queue_consumer_batch_export_queue_is_enabled": False})
    runner = await start_workers(
        dataclasses.replace(services, settings=settings),
        WorkerRole.EXPORT,
        processors=processors,
        crons=[],
    )
    try:
        assert set(runner.queue_names) == {
            "blobstorage-integration-queue",
            "blobstorage-integration-processing-queue",
            "batch-export-cleanup-queue",
        }
    finally:
        await runner.shutdown(5)


async def _run_one(services, spec, processor, opts, *, until_state, job_data=None):
    queue = _queue(services, spec.name)
    runner = QueueRunner(
        services.redis_connection,
        [spec],
        {spec.name: processor},
        prefix=services.settings.redis_key_prefix,
        metrics=services.metrics,
        activity=ActivityTracker(services.redis, services.settings.redis_key_prefix),
    )
    await runner.start()
    job = await queue.add("j", job_data or {}, opts)

    async def reached():
        return await queue.getJobState(job.id) in until_state

    try:
        assert await _wait(reached, timeout=20), await queue.getJobState(job.id)
        return await queue.getJob(job.id), await queue.getJobState(job.id)
    finally:
        await runner.shutdown(5)
        await queue.close()


async def test_retry_with_exponential_backoff_then_success(services):
    attempts: list[float] = []

    async def flaky(job, token):
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise RuntimeError(f"transient failure {len(attempts)}")
        return {"ok": True}

    spec = QueueSpec("retry-test", RoleGroup.INGESTION)
    job, state = await _run_one(
        services,
        spec,
        flaky,
        {"attempts": 5, "backoff": {"type": "exponential", "delay": 200}},
        until_state={"completed", "failed"},
    )
    assert state == "completed" and job.attemptsMade == 4 and job.returnvalue == {"ok": True}
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # 200, 400, 800 ms: sub-second and growing (bullmq alone would round each up to a whole second).
    assert 0.15 < gaps[0] < 0.9
    assert gaps[1] > gaps[0] * 1.4 and gaps[2] > gaps[1] * 1.4, gaps
    sample = services.metrics.registry.get_sample_value
    failed = sample("queue_jobs_total", {"queue": "retry-test", "status": "failed"})
    done = sample("queue_jobs_total", {"queue": "retry-test", "status": "completed"})
    attempts_total = sample("queue_job_attempts_total", {"queue": "retry-test"})
    assert (failed, done, attempts_total) == (3.0, 1.0, 4.0)
    count = services.metrics.registry.get_sample_value(
        "queue_job_duration_seconds_count", {"queue": "retry-test", "status": "completed"}
    )
    assert count == 1.0


async def test_stored_errors_are_truncated(services):
    async def explode(job, token):
        raise ValueError("x" * 1_000_000)

    spec = QueueSpec("error-test", RoleGroup.INGESTION)
    job, state = await _run_one(services, spec, explode, {"attempts": 1, "stackTraceLimit": 1}, until_state={"failed"})
    assert state == "failed"
    assert job.failedReason.startswith("ValueError: xxx") and job.failedReason.endswith("[truncated]")
    assert len(job.failedReason) <= 2_000
    assert sum(len(t) for t in job.stacktrace) < 5_000


async def test_large_results_are_bounded(services):
    async def big(job, token):
        return {"rows": ["y" * 100] * 10_000}

    spec = QueueSpec("result-test", RoleGroup.INGESTION)
    job, _ = await _run_one(services, spec, big, {}, until_state={"completed"})
    assert job.returnvalue["truncated"] is True and job.returnvalue["chars"] > 1_000_000


async def test_retention_removes_old_completed_and_failed_jobs(services):
    async def process(job, token):
        if job.data.get("fail"):
            raise RuntimeError("no")

    spec = QueueSpec("retention-test", RoleGroup.INGESTION)
    queue = _queue(services, spec.name)
    runner = QueueRunner(
        services.redis_connection,
        [spec],
        {spec.name: process},
        prefix=services.settings.redis_key_prefix,
        metrics=services.metrics,
    )
    await runner.start()
    opts = {"attempts": 1, "removeOnComplete": {"age": 1}, "removeOnFail": {"age": 1}}
    try:
        first_ok = await queue.add("a", {}, opts)
        first_bad = await queue.add("b", {"fail": True}, opts)
        assert await _wait(lambda: _states(queue, [first_ok.id, first_bad.id], {"completed", "failed"}))
        assert await queue.getJob(first_ok.id) is not None
        await asyncio.sleep(2.1)
        # Age-based cleanup runs as later jobs finish.
        later_ok = await queue.add("c", {}, opts)
        later_bad = await queue.add("d", {"fail": True}, opts)
        assert await _wait(lambda: _states(queue, [later_ok.id, later_bad.id], {"completed", "failed"}))
        assert await queue.getJob(first_ok.id) is None
        assert await queue.getJob(first_bad.id) is None
        assert await queue.getJob(later_ok.id) is not None
    finally:
        await runner.shutdown(5)
        await queue.close()


async def _states(queue, ids, wanted):
    return all([await queue.getJobState(i) in wanted for i in ids])


async def test_progress_is_visible_in_the_job_record_and_the_api(services, project, monkeypatch):
    release = asyncio.Event()

    async def slow(job, token):
        await job.updateProgress(40)
        await release.wait()
        await job.updateProgress(100)

    settings = services.settings.model_copy(update={"admin_api_key": "admin-secret"})
    services = dataclasses.replace(services, settings=settings)
    queue_name = "batch-export-queue"
    spec = dataclasses.replace(QUEUES[queue_name])
    queue = _queue(services, queue_name)
    runner = QueueRunner(
        services.redis_connection,
        [spec],
        {queue_name: slow},
        prefix=settings.redis_key_prefix,
        metrics=services.metrics,
    )
    await runner.start()
    app = create_app(services)
    try:
        job = await queue.add("export", {"projectId": "p1"}, {})
        assert await _wait(lambda: _progress_is(queue, job.id, 40))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            url = f"/api/admin/queues/{queue_name}/jobs/{job.id}"
            seen = await client.get(url, headers={"Authorization": "Bearer admin-secret"})
            denied = await client.get(url, headers={"Authorization": "Bearer wrong"})
            missing = await client.get(
                f"/api/admin/queues/{queue_name}/jobs/nope", headers={"Authorization": "Bearer admin-secret"}
            )
            # A project's key sees another project's job exactly as a job that does not exist.
            _, other_project_headers = project
            foreign = await client.get(url, headers=other_project_headers)
            foreign_missing = await client.get(
                f"/api/admin/queues/{queue_name}/jobs/nope", headers=other_project_headers
            )
        assert seen.status_code == 200
        assert seen.json()["progress"] == 40 and seen.json()["state"] == "active"
        assert denied.status_code == 401
        assert missing.status_code == 404
        assert foreign.status_code == 404 and foreign_missing.status_code == 404
        assert foreign.json()["error"] == foreign_missing.json()["error"] == "LangfuseNotFoundError"
        release.set()
        assert await _wait(lambda: _progress_is(queue, job.id, 100))
    finally:
        release.set()
        await runner.shutdown(5)
        await queue.close()


async def _progress_is(queue, job_id, value):
    job = await queue.getJob(job_id)
    return job is not None and job.progress == value


@pytest.mark.slow
async def test_stalled_job_is_recovered_after_sigkill(services, redis_url):
    prefix = services.settings.redis_key_prefix
    queue = _queue(services, "stall-test")
    client = redis_client(redis_url)
    first = subprocess.Popen(
        [sys.executable, str(CHILD), "stall", "stall-test", prefix, redis_url, "60"], stdout=subprocess.PIPE, text=True
    )
    second = None
    try:
        assert first.stdout.readline().strip() == "ready"
        job = await queue.add("long", {}, {"attempts": 3})
        assert await _wait(lambda: _list_len(client, f"{prefix}:test:starts", 1))
        first.kill()
        first.wait()
        killed_at = time.monotonic()
        second = subprocess.Popen(
            [sys.executable, str(CHILD), "stall", "stall-test", prefix, redis_url, "0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert second.stdout.readline().strip() == "ready"
        assert await _wait(lambda: _states(queue, [job.id], {"completed"}), timeout=30)
        took = time.monotonic() - killed_at
        starts = await client.lrange(f"{prefix}:test:starts", 0, -1)
        assert starts == [job.id, job.id]  # run once by the killed worker, once after recovery
        assert took < 20
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
            if proc and proc.stdout:
                proc.stdout.close()
        await queue.close()
        await client.aclose()


def _runner(services, spec, processor):
    return QueueRunner(
        services.redis_connection,
        [spec],
        {spec.name: processor},
        prefix=services.settings.redis_key_prefix,
        metrics=services.metrics,
    )


async def _lose_lock_once_running(services, queue_name, job_id, calls):
    """Fault injection: the lock lapses as in a starved process (deleted while the first run goes on)."""
    assert await _wait(lambda: asyncio.sleep(0, len(calls) == 1))
    await services.redis.delete(f"{services.settings.redis_key_prefix}:{queue_name}:{job_id}:lock")


async def test_a_job_rerun_after_a_lost_lock_keeps_its_renewal(services):
    """bullmq tracks lock renewals by job id: when the first run of a re-run job ended, it used to drop
    the re-run's renewal, so the job stalled again and again until it was failed unrun."""
    spec = QueueSpec(
        "rerun-test",
        RoleGroup.INGESTION,
        concurrency=2,
        lock_duration_ms=1000,
        stalled_interval_ms=300,
        max_stalled_count=5,
    )
    calls: list[str] = []
    first_done = asyncio.Event()

    async def process(job, token):
        calls.append(token)
        if len(calls) == 1:
            await _wait(lambda: asyncio.sleep(0, len(calls) > 1))  # until the stall check re-ran it
            first_done.set()
            return "first"
        await first_done.wait()
        await asyncio.sleep(3)  # three lock durations: only renewals keep this run's lock
        return "second"

    queue = _queue(services, spec.name)
    runner = _runner(services, spec, process)
    await runner.start()
    try:
        job = await queue.add("j", {}, {})
        await _lose_lock_once_running(services, spec.name, job.id, calls)
        assert await _wait(lambda: _states(queue, [job.id], {"completed", "failed"}), timeout=20)
        state, job = await queue.getJobState(job.id), await queue.getJob(job.id)
    finally:
        await runner.shutdown(5)
        await queue.close()
    assert len(calls) == 2 and calls[0] != calls[1], calls  # one stall, one re-run, no more
    assert state == "completed" and job.returnvalue == "second"
    assert job.stalledCounter == 1


class _Blocking:
    """A processor that never finishes on its own, and records what the runner hands to `abandoned`."""

    def __init__(self):
        self.calls: list[str] = []
        self.abandoned_jobs: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def __call__(self, job, token):
        self.calls.append(token)
        await self.release.wait()

    async def abandoned(self, job):
        self.abandoned_jobs.append((job.id, job.deferredFailure))


async def test_a_job_failed_for_stalling_reaches_the_abandoned_hook(services):
    """bullmq fails a job that stalled more than `maxStalledCount` times without calling the processor;
    the runner logs it and calls the processor's `abandoned` hook (ingestion dead-letters it there)."""
    spec = QueueSpec(
        "abandon-test",
        RoleGroup.INGESTION,
        concurrency=2,
        lock_duration_ms=1000,
        stalled_interval_ms=300,
        max_stalled_count=0,
    )
    processor = _Blocking()
    queue = _queue(services, spec.name)
    runner = _runner(services, spec, processor)
    await runner.start()
    try:
        job = await queue.add("j", {}, {"attempts": 3})
        await _lose_lock_once_running(services, spec.name, job.id, processor.calls)
        assert await _wait(lambda: asyncio.sleep(0, bool(processor.abandoned_jobs)), timeout=20)
        state, stored = await queue.getJobState(job.id), await queue.getJob(job.id)
    finally:
        processor.release.set()
        await runner.shutdown(5)
        await queue.close()
    assert processor.abandoned_jobs == [(job.id, "job stalled more than allowable limit")]
    assert state == "failed" and stored.failedReason == "job stalled more than allowable limit"
    assert len(processor.calls) == 1  # the processor never saw the failing run


async def _list_len(client, key, n):
    return await client.llen(key) >= n


async def test_health_turns_red_when_a_queue_stops_moving(services):
    prefix = services.settings.redis_key_prefix
    client = redis_client(services.redis_url)
    queue = _queue(services, "ingestion-queue")
    try:
        healthy = await check_queues(
            client,
            prefix,
            queues=["ingestion-queue"],
            expected=["ingestion-queue"],
            stuck_after_s=1.0,
            metrics=services.metrics,
        )
        assert healthy.healthy and healthy.body["details"]["queue_counts"]["ingestion-queue"]["waiting"] == 0
        await queue.add("ingest", {}, {})
        fresh = await check_queues(
            client,
            prefix,
            queues=["ingestion-queue"],
            expected=["ingestion-queue"],
            stuck_after_s=1.0,
            metrics=services.metrics,
        )
        assert fresh.healthy, "a job that just arrived is not a stuck queue"
        await asyncio.sleep(1.3)
        stuck = await check_queues(
            client,
            prefix,
            queues=["ingestion-queue"],
            expected=["ingestion-queue"],
            stuck_after_s=1.0,
            metrics=services.metrics,
        )
        assert not stuck.healthy and stuck.body["queue"] is False and stuck.body["redis"] is True
        assert stuck.body["details"]["stuck_queues"]["ingestion-queue"]["waiting"] == 1
        assert (
            services.metrics.registry.get_sample_value("queue_depth", {"queue": "ingestion-queue", "state": "waiting"})
            == 1.0
        )
        not_expected = await check_queues(
            client, prefix, queues=["ingestion-queue"], expected=[], stuck_after_s=1.0, metrics=services.metrics
        )
        assert not_expected.healthy, "a queue nobody is meant to consume cannot be stuck"

        # The web endpoint says the same, with 503.
        settings = services.settings.model_copy(update={"queue_stuck_threshold_minutes": 1 / 60})
        app = create_app(dataclasses.replace(services, settings=settings), expected_queues=["ingestion-queue"])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            red = await http.get("/api/health/queue")
        assert red.status_code == 503 and red.json()["healthy"] is False

        # A worker that consumes it turns it green again.
        runner = await start_workers(
            services,
            WorkerRole.INGESTION,
            crons=[],
            processors={"ingestion-queue": lambda job, token: asyncio.sleep(0)},
        )
        try:
            assert await _wait(lambda: _waiting_is(queue, 0))
            green = await check_queues(
                client,
                prefix,
                queues=["ingestion-queue"],
                expected=["ingestion-queue"],
                stuck_after_s=1.0,
                worker_running=runner.running,
                metrics=services.metrics,
            )
            assert green.healthy and green.body["worker"] is True
        finally:
            await runner.shutdown(5)
    finally:
        await queue.close()
        await client.aclose()


async def _waiting_is(queue, n):
    return (await queue.getJobCounts("waiting"))["waiting"] == n


async def test_health_is_red_when_redis_is_unreachable():
    client = redis_client("redis://127.0.0.1:1")
    health = await check_queues(
        client, "x", queues=["ingestion-queue"], expected=["ingestion-queue"], stuck_after_s=60, metrics=Metrics()
    )
    await client.aclose()
    assert not health.healthy
    assert health.body["redis"] is False and health.body["details"]["redis_status"] == "unreachable"


def test_metrics_also_go_through_opentelemetry():
    reader = InMemoryMetricReader()
    metrics = Metrics(meter_provider=MeterProvider(metric_readers=[reader]))
    metrics.job_started("q")
    metrics.job_finished("q", "completed", 0.25)
    metrics.set_depth("q", "waiting", 7)
    found = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [p for p in metric.data.data_points]
    assert found["queue_jobs_total"][0].value == 1
    assert found["queue_job_attempts_total"][0].value == 1
    assert found["queue_job_duration_seconds"][0].sum == 0.25
    assert found["queue_depth"][0].value == 7
