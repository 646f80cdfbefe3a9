"""A batch-export worker SIGKILLed mid-upload: the retry publishes one complete file, never a half.

The worker runs as a child process (`batch_export_child.py`, the real export-role queue runner)
over its own chDB directory and the test's metadata DB, Redis and moto bucket. The first worker is
killed while its multipart upload is open (after the 5,000-row progress report); the queue's
stalled-job check hands the one job to a second worker, which writes the whole file.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY
from test_export_crash import Child
from tracehouse.batch_export.models import CreateBatchExportRequest, Status
from tracehouse.batch_export.service import create_export, get_record
from tracehouse.export.worker import BATCH_EXPORT_QUEUE
from tracehouse.metadata import MetadataDB, create_project
from tracehouse.runtime import queue_producer
from tracehouse.settings import load_settings

pytestmark = pytest.mark.slow  # worker subprocesses, one killed mid-upload

SCRIPT = Path(__file__).with_name("batch_export_child.py")
PROJECT = "bx-crash"
ROWS = 20_000  # ~21 MB of JSONL: a multipart upload of several 5 MiB parts


def _until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_worker_killed_mid_export_leads_to_one_complete_file(
    tmp_path: Path, metadata_url: str, redis_url: str, key_prefix: str, moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    data_dir = tmp_path / "data"
    settings = {
        "data_dir": str(data_dir),
        "database_url": metadata_url,
        "redis_url": redis_url,
        "redis_key_prefix": key_prefix,
        "batch_export_bucket": bucket,
        "batch_export_endpoint": moto_endpoint,
        "batch_export_region": REGION,
        "batch_export_access_key_id": ACCESS_KEY,
        "batch_export_secret_access_key": SECRET_KEY,
        "batch_export_force_path_style": True,
        "batch_export_part_size_mib": 5,
        # A killed worker's lock expires in seconds, so the stalled check hands the job on quickly.
        "queue_lock_duration_ms": 2_000,
        "queue_stalled_interval_ms": 1_000,
    }
    assert Child(tmp_path, "load", "load", str(data_dir), PROJECT, str(ROWS), script=SCRIPT).finish() == 0

    metadata = MetadataDB(metadata_url)
    metadata.migrate()
    create_project(metadata, "crash", project_id=PROJECT)
    test_settings = load_settings(**settings)
    producer = queue_producer(redis_url, test_settings)
    try:
        created = await create_export(
            metadata=metadata,
            producer=producer,
            settings=test_settings,
            project_id=PROJECT,
            body=CreateBatchExportRequest.model_validate({"tableName": "traces", "format": "JSONL"}),
        )
        export_id = created.id

        first = Child(tmp_path, "worker-1", "worker", json.dumps(settings), "3", script=SCRIPT)
        try:
            first.wait_for(lambda line: line == "progress 5000", timeout=120)
        finally:
            first.kill()
        killed = get_record(metadata, export_id)
        assert killed is not None and killed.status is Status.PROCESSING and killed.rows_exported == 5_000
        assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, "no half file is visible"
        assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads"), "the kill left the upload open"

        queue = producer.queue(BATCH_EXPORT_QUEUE)
        second = Child(tmp_path, "worker-2", "worker", json.dumps(settings), "0", script=SCRIPT)
        try:
            done = _until(
                lambda: (r := get_record(metadata, export_id)) is not None and r.status is not Status.PROCESSING and r,
                "the second worker to finish the export",
            )
            # The record is final before the worker hands the job back to the queue: let it finish that
            # before it is killed, or the job is left active for the stalled-job check to take back.
            deadline = time.monotonic() + 30
            while (await queue.getJobCounts("completed"))["completed"] < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        finally:
            second.kill()
        assert done.status is Status.COMPLETED, (done.status, done.log)
        assert done.rows_exported == done.total_rows == ROWS

        objects = s3_client.list_objects_v2(Bucket=bucket)["Contents"]
        assert [o["Key"] for o in objects] == [done.object_key] and objects[0]["Size"] == done.size_bytes
        body = s3_client.get_object(Bucket=bucket, Key=done.object_key)["Body"].read()
        ids = [json.loads(line)["id"] for line in body.decode().splitlines()]
        assert len(ids) == len(set(ids)) == ROWS, "every row exactly once"

        # One export id, one job: the retry was the same job, now completed.
        counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed")
        assert counts == {"completed": 1, "failed": 0, "waiting": 0, "active": 0, "delayed": 0}, counts
        assert (await queue.getJob(export_id)).returnvalue["rows"] == ROWS
    finally:
        await producer.close()
        metadata.dispose()
