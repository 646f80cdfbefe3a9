import asyncio
import time

from bullmq import Queue

from tracehouse.capabilities import QUEUES
from tracehouse.metrics import Metrics
from tracehouse.queues import QueueRunner, QueueSpec, RoleGroup, bullmq_connection, queues_for_role
from tracehouse.settings import Settings, WorkerRole, load_settings


def test_connection_dict_disables_socket_timeout():
    assert bullmq_connection("redis://user:p%40ss@127.0.0.1:6380/3") == {
        "socket_timeout": None,
        "host": "127.0.0.1",
        "port": 6380,
        "username": "user",
        "password": "p@ss",
        "db": 3,
    }
    assert bullmq_connection("unix:///tmp/r.sock") == {"socket_timeout": None, "unix_socket_path": "/tmp/r.sock"}


def test_roles_split_the_registry_between_ingestion_and_export(monkeypatch):
    defaults = load_settings()
    export = {s.name for s in queues_for_role(WorkerRole.EXPORT, QUEUES.values(), defaults)}
    ingestion = {s.name for s in queues_for_role(WorkerRole.INGESTION, QUEUES.values(), defaults)}
    everything = {s.name for s in queues_for_role(WorkerRole.ALL, QUEUES.values(), defaults)}
    assert export == {
        "blobstorage-integration-queue",
        "blobstorage-integration-processing-queue",
        "batch-export-queue",
        "batch-export-cleanup-queue",
    }
    assert export.isdisjoint(ingestion)
    assert everything == export | ingestion == set(QUEUES)
    monkeypatch.setenv("QUEUE_CONSUMER_BATCH_EXPORT_QUEUE_IS_ENABLED", "false")
    flags = load_settings()
    assert "batch-export-queue" not in {s.name for s in queues_for_role(WorkerRole.EXPORT, QUEUES.values(), flags)}


def test_every_queue_has_its_consumer_flag_in_settings():
    defaults = load_settings()
    for spec in QUEUES.values():
        assert defaults.queue_consumer_enabled(spec.name) is True
        field = Settings.model_fields["queue_consumer_" + spec.name.replace("-", "_") + "_is_enabled"]
        assert field.validation_alias == spec.enabled_flag


async def _runner_with_job(redis_url, prefix, seconds, timeout_s):
    spec = QueueSpec("shutdown-test", RoleGroup.INGESTION, lock_duration_ms=5000)
    started = asyncio.Event()
    finished = []

    async def slow(job, token):
        started.set()
        await asyncio.sleep(seconds)
        finished.append(job.id)
        return "done"

    connection = bullmq_connection(redis_url)
    queue = Queue(spec.name, {"connection": dict(connection), "prefix": prefix})
    runner = QueueRunner(connection, [spec], {spec.name: slow}, prefix=prefix, metrics=Metrics())
    await runner.start()
    job = await queue.add("slow", {}, {})
    await asyncio.wait_for(started.wait(), 10)
    t0 = time.monotonic()
    clean = await runner.shutdown(timeout_s)
    took = time.monotonic() - t0
    state = await queue.getJobState(job.id)
    await queue.close()
    return clean, took, state, finished, job.id


async def test_graceful_shutdown_waits_for_running_job(redis_url, key_prefix):
    clean, took, state, finished, job_id = await _runner_with_job(redis_url, key_prefix, seconds=1.0, timeout_s=10)
    assert clean is True
    assert finished == [job_id]
    assert state == "completed"
    assert took >= 0.5


async def test_shutdown_gives_up_at_the_bound_and_leaves_job_for_recovery(redis_url, key_prefix):
    clean, took, state, finished, _ = await _runner_with_job(redis_url, key_prefix, seconds=30, timeout_s=0.5)
    assert clean is False
    assert took < 5
    assert finished == []
    # Not failed, not completed: it stays active until its lock expires and another worker takes it.
    assert state == "active"


def test_runner_refuses_queues_without_processor():
    spec = QueueSpec("nothing-here", RoleGroup.INGESTION)
    try:
        QueueRunner({}, [spec], {}, metrics=Metrics())
    except ValueError as exc:
        assert "nothing-here" in str(exc)
    else:
        raise AssertionError("expected ValueError")
