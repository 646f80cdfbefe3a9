"""Exactly-once scheduled work: the guard, usage metering, and many workers killed at random."""

import asyncio
import base64
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from bullmq import Queue
from sqlalchemy import select

from tracehouse.clickhouse import Workload
from tracehouse.cron import CronGuard, CronSpec, floor_time, run_cron
from tracehouse.metadata import MetadataDB, create_api_key, create_project
from tracehouse.metadata.models import CronJob, CronRun
from tracehouse.metrics import Metrics
from tracehouse.queues import bullmq_connection
from tracehouse.runtime import Services
from tracehouse.usage.service import usage_for_project
from tracehouse.usage.worker import USAGE_CRON, usage_cron
from tracehouse.web.app import create_app

CHILD = Path(__file__).with_name("child_worker.py")


@pytest.fixture
def metadata(metadata_url):
    db = MetadataDB(metadata_url)
    db.migrate()
    yield db
    db.dispose()


def _runs(db, name):
    with db.session() as session:
        rows = session.execute(select(CronRun).where(CronRun.name == name).order_by(CronRun.period_start)).scalars()
        return [(r.period_start, r.period_end) for r in rows]


def test_guard_skips_a_fresh_claim_and_takes_over_a_stale_one(metadata):
    guard = CronGuard(metadata)
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    first = guard.claim("job", now=now, stale_after=timedelta(minutes=5))
    assert first == now
    assert guard.claim("job", now=now + timedelta(minutes=1), stale_after=timedelta(minutes=5)) is None
    taken = guard.claim("job", now=now + timedelta(minutes=6), stale_after=timedelta(minutes=5))
    assert taken == now + timedelta(minutes=6)
    guard.release("job", first)  # the crashed runner's late release must not free the new claim
    assert guard.claim("job", now=now + timedelta(minutes=7), stale_after=timedelta(minutes=5)) is None
    guard.release("job", taken)
    assert guard.claim("job", now=now + timedelta(minutes=7), stale_after=timedelta(minutes=5)) is not None


async def test_cron_processes_every_missed_period_once(metadata):
    computed = []

    async def compute(start, end):
        computed.append(start)
        return start

    spec = CronSpec(
        name="catch-up",
        queue="q",
        period=timedelta(hours=1),
        repeat={"every": 1000},
        compute=compute,
        apply=lambda session, s, e, v: None,
    )
    clock = [datetime(2026, 11, 1, 12, 30, tzinfo=UTC)]
    first = await run_cron(spec, metadata, now=lambda: clock[0])
    assert first.claimed and [p[0].hour for p in first.periods] == [11]
    again = await run_cron(spec, metadata, now=lambda: clock[0])
    assert again.claimed and again.periods == []
    clock[0] = datetime(2026, 11, 1, 16, 10, tzinfo=UTC)  # three ticks missed while nothing ran
    later = await run_cron(spec, metadata, now=lambda: clock[0])
    assert [p[0].hour for p in later.periods] == [12, 13, 14, 15]
    assert [p[0].hour for p in _runs(metadata, "catch-up")] == [11, 12, 13, 14, 15]
    assert len(computed) == 5


async def test_failed_period_is_retried_not_skipped(metadata):
    calls = []

    async def compute(start, end):
        calls.append(start)
        if len(calls) == 2:
            raise RuntimeError("ClickHouse unavailable")

    spec = CronSpec(
        name="flaky",
        queue="q",
        period=timedelta(hours=1),
        repeat={"every": 1000},
        compute=compute,
        apply=lambda *a: None,
    )
    clock = lambda: datetime(2026, 11, 1, 15, 30, tzinfo=UTC)  # noqa: E731
    await run_cron(spec, metadata, now=lambda: datetime(2026, 11, 1, 12, 30, tzinfo=UTC))
    with pytest.raises(RuntimeError):
        await run_cron(spec, metadata, now=clock)
    retried = await run_cron(spec, metadata, now=clock)  # the guard was released despite the failure
    assert retried.claimed
    assert [s.hour for s, _ in _runs(metadata, "flaky")] == [11, 12, 13, 14]


def _rows(project, ids, created):
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "project_id": [project] * n,
            "timestamp": pa.array([created] * n, pa.timestamp("ms", tz="UTC")),
            "name": ["x"] * n,
            "created_at": pa.array([created] * n, pa.timestamp("ms", tz="UTC")),
            "event_ts": pa.array([created] * n, pa.timestamp("ms", tz="UTC")),
            "is_deleted": pa.array([0] * n, pa.uint8()),
        }
    )


async def test_usage_metering_counts_the_previous_hour_per_project(clickhouse, settings, metadata):
    hour = floor_time(datetime.now(UTC), timedelta(hours=1)) - timedelta(hours=3)
    a, b = f"usage-a-{random.randrange(10**9)}", f"usage-b-{random.randrange(10**9)}"
    inside = hour + timedelta(minutes=10)
    await clickhouse.insert_arrow("traces", _rows(a, ["t1", "t2", "t3"], inside), workload=Workload.INGESTION)
    await clickhouse.insert_arrow("traces", _rows(a, ["t1"], inside), workload=Workload.INGESTION)  # an update
    await clickhouse.insert_arrow("traces", _rows(b, ["u1"], inside), workload=Workload.INGESTION)
    await clickhouse.insert_arrow(
        "traces", _rows(a, ["late"], hour + timedelta(hours=1, minutes=1)), workload=Workload.INGESTION
    )
    obs = (
        _rows(a, ["o1", "o2"], inside)
        .append_column("trace_id", pa.array(["t1", "t1"]))
        .append_column("start_time", pa.array([inside] * 2, pa.timestamp("ms", tz="UTC")))
        .append_column("type", pa.array(["SPAN"] * 2))
        .drop_columns(["timestamp"])
    )
    await clickhouse.insert_arrow("observations", obs, workload=Workload.INGESTION)
    scores = (
        _rows(a, ["s1"], inside)
        .append_column("value", pa.array([1.0]))
        .append_column("source", pa.array(["API"]))
        .append_column("data_type", pa.array(["NUMERIC"]))
    )
    await clickhouse.insert_arrow("scores", scores, workload=Workload.INGESTION)

    spec = usage_cron(clickhouse)
    # Start metering just before our hour so the run covers it (and the next one).
    with metadata.session() as session:
        session.add(CronJob(name=USAGE_CRON, last_run=hour, state="QUEUED"))
    outcome = await run_cron(spec, metadata, now=lambda: hour + timedelta(hours=2, minutes=6))
    assert [s for s, _ in outcome.periods] == [hour, hour + timedelta(hours=1)]
    usage_a = usage_for_project(metadata, a, None, None)
    assert [(u.hour, u.traces, u.observations, u.scores) for u in usage_a] == [
        (hour, 3, 2, 1),
        (hour + timedelta(hours=1), 1, 0, 0),
    ]
    assert [(u.traces, u.observations) for u in usage_for_project(metadata, b, None, None)] == [(1, 0)]

    # The API shows a project its own usage only.
    project = create_project(metadata, "usage", project_id=a)
    key = create_api_key(metadata, project.id, salt=settings.salt)
    # Only the metadata DB is used by this route; the other services are not needed for it.
    services = Services(
        settings=settings,
        clickhouse=clickhouse,
        metadata=metadata,
        blobs=None,
        redis_url="unix:///unused",
        redis=None,
        producer=None,
        metrics=Metrics(),
    )
    app = create_app(services)
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        window = {"from": hour.isoformat(), "to": (hour + timedelta(hours=1)).isoformat()}
        body = (await client.get("/api/public/usage", headers=auth, params=window)).json()
        unauth = await client.get("/api/public/usage")
    assert body["data"] == [
        {"hour": hour.isoformat().replace("+00:00", "Z"), "traces": 3, "observations": 2, "scores": 1}
    ]
    assert body["meta"]["totals"] == {"traces": 3, "observations": 2, "scores": 1}
    assert unauth.status_code == 401


@pytest.mark.slow
def test_many_workers_killed_at_random_run_each_period_exactly_once(redis_url, metadata_url, key_prefix):
    """Four worker processes, restarted at random (half by SIGKILL, often mid-run), share a cron job
    with a 1 s period. Afterwards every period from the first to the last ran exactly once."""
    db = MetadataDB(metadata_url)
    db.migrate()
    period_ms = 1000
    args = [sys.executable, str(CHILD), "cron", key_prefix, redis_url, metadata_url, str(period_ms)]
    rng = random.Random(7)
    procs: list[subprocess.Popen] = []

    def spawn():
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    live = [spawn() for _ in range(4)]
    kills = {"SIGKILL": 0, "SIGTERM": 0}
    try:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            victim = live.pop(rng.randrange(len(live)))
            sig = signal.SIGKILL if rng.random() < 0.5 else signal.SIGTERM
            kills[sig.name] += 1
            victim.send_signal(sig)
            victim.wait(20)
            live.append(spawn())
        # Let the survivors catch up on anything the churn delayed, then stop them gently.
        time.sleep(4)
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        for proc in live:
            proc.wait(20)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = _runs(db, "singleton-test")
    starts = [s for s, _ in runs]
    db.dispose()
    assert kills["SIGKILL"] >= 3 and kills["SIGTERM"] >= 3
    assert len(runs) >= 20, f"only {len(runs)} periods ran"
    assert len(starts) == len(set(starts)), "a period ran twice"
    step = timedelta(milliseconds=period_ms)
    gaps = [(a, b) for (a, _), (b, _) in zip(runs, runs[1:], strict=False) if b - a != step]
    assert not gaps, f"periods skipped: {gaps[:3]}"
    assert all(e - s == step for s, e in runs)
    # The last period processed is recent: the schedule kept running through the churn.
    assert datetime.now(UTC) - runs[-1][1] < timedelta(seconds=10)


async def test_scheduler_is_registered_once_whatever_the_number_of_workers(redis_url, key_prefix, metadata):
    from tracehouse.cron import register_schedules
    from tracehouse.queues import QueueProducer, QueueSpec, RoleGroup

    spec = CronSpec(
        name="only-once",
        queue="cron-reg-queue",
        period=timedelta(hours=1),
        repeat={"pattern": "5 * * * *"},
        compute=None,
        apply=None,
    )
    connection = bullmq_connection(redis_url)
    producers = [
        QueueProducer(connection, {spec.queue: QueueSpec(spec.queue, RoleGroup.INGESTION)}, prefix=key_prefix)
        for _ in range(4)
    ]
    await asyncio.gather(*(register_schedules(p.queue, [spec]) for p in producers))
    for p in producers:
        await p.close()
    queue = Queue(spec.queue, {"connection": connection, "prefix": key_prefix})
    try:
        assert await queue.getJobSchedulersCount() == 1
        counts = await queue.getJobCounts("waiting", "delayed", "active")
        assert counts["waiting"] == 0 and counts["active"] == 0, "nothing may be queued to run now"
        assert counts["delayed"] == 1  # exactly the next tick
    finally:
        await queue.close()
