"""A `tracehouse serve` process SIGKILLed while it is merging batches loses nothing and duplicates
nothing: after a restart, stalled jobs are re-run from their raw batches and every entity has
exactly one final row that reflects all of its events."""

import base64
import json
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis

from conftest import free_port
from test_cli import Proc
from tracehouse.queues import bullmq_connection

pytestmark = pytest.mark.slow  # worker subprocesses killed mid-write

BATCHES = 120
TRACES_PER_BATCH = 10

COUNT_SCRIPT = """
import chdb, json, sys
conn = chdb.connect(sys.argv[1])
n = lambda sql: int(json.loads(conn.query(sql, "JSONEachRow").data().strip())["n"])
print(json.dumps({
  "final": n("SELECT count() AS n FROM traces FINAL"),
  "unique": n("SELECT uniqExact(id) AS n FROM traces"),
  "complete": n("SELECT countIf(output = 'done' AND name = 'crash') AS n FROM traces FINAL"),
  "dupes": n("SELECT count() AS n FROM (SELECT id FROM traces FINAL GROUP BY id HAVING count() > 1)"),
  "spans": n("SELECT count() AS n FROM observations FINAL"),
}))
"""


def _batch(i):
    now = time.time()
    events = []
    for j in range(TRACES_PER_BATCH):
        trace_id = f"t-{i}-{j}"
        stamp = lambda dt: time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + dt)) + ".000Z"  # noqa: E731
        events += [
            {
                "id": str(uuid.uuid4()),
                "timestamp": stamp(0),
                "type": "trace-create",
                "body": {"id": trace_id, "name": "crash", "input": "x" * 200},
            },
            {
                "id": str(uuid.uuid4()),
                "timestamp": stamp(0.1),
                "type": "span-create",
                "body": {"id": f"s-{i}-{j}", "traceId": trace_id, "name": "work"},
            },
            {
                "id": str(uuid.uuid4()),
                "timestamp": stamp(0.2),
                "type": "trace-create",
                "body": {"id": trace_id, "output": "done"},
            },
        ]
    return {"batch": events}


def test_sigkill_mid_ingestion_loses_and_duplicates_nothing(tmp_path, redis_url, key_prefix):
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "LANGFUSE_INIT_PROJECT_ID": "crash",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-lf-crash",
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk-lf-crash",
        "TRACEHOUSE_QUEUE_LOCK_DURATION_MS": "3000",
        "TRACEHOUSE_QUEUE_STALLED_INTERVAL_MS": "1000",
    }
    args = ["serve", "--port", str(port), "--data-dir", str(data_dir)]
    auth = {"Authorization": "Basic " + base64.b64encode(b"pk-lf-crash:sk-lf-crash").decode()}
    client = redis.Redis(**bullmq_connection(redis_url))
    queue = f"{key_prefix}:ingestion-queue"

    proc = Proc(args, env, tmp_path)
    try:
        proc.wait_for("Press Ctrl-C to stop")
        url = f"http://127.0.0.1:{port}/api/public/ingestion"
        with httpx.Client(headers=auth, timeout=30) as http:
            for i in range(BATCHES):
                response = http.post(url, json=_batch(i))
                assert response.status_code == 207 and not response.json()["errors"]
        # Kill while work is still queued or running.
        deadline = time.monotonic() + 30
        while client.llen(f"{queue}:wait") + client.llen(f"{queue}:active") == 0:
            assert time.monotonic() < deadline, "the queue drained before we could kill the worker"
            time.sleep(0.01)
        proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait(10)
        pending = client.llen(f"{queue}:wait") + client.llen(f"{queue}:active")
    finally:
        proc.kill()
    assert pending > 0

    proc = Proc(args, env, tmp_path)
    try:
        proc.wait_for("Press Ctrl-C to stop")
        deadline = time.monotonic() + 120
        while True:
            counts = {s: client.llen(f"{queue}:{s}") for s in ("wait", "active")}
            counts["delayed"] = client.zcard(f"{queue}:delayed")
            counts["completed"] = client.zcard(f"{queue}:completed")
            if sum(counts[s] for s in ("wait", "active", "delayed")) == 0 and counts["completed"] >= 1:
                break
            assert time.monotonic() < deadline, f"queue did not drain after restart: {counts}"
            time.sleep(0.5)
        failed = client.zcard(f"{queue}:failed")
        # Why they failed, so a red run says more than a count.
        reasons = {
            client.hget(f"{queue}:{job_id.decode()}", "failedReason")
            for job_id in client.zrange(f"{queue}:failed", 0, 4)
        }
        proc.stop(signal.SIGTERM)
    finally:
        proc.kill()
        client.close()
    assert failed == 0, f"{failed} jobs failed: {reasons}"

    result = subprocess.run(
        [sys.executable, "-c", COUNT_SCRIPT, str(data_dir / "clickhouse")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    expected = BATCHES * TRACES_PER_BATCH
    assert counts == {"final": expected, "unique": expected, "complete": expected, "dupes": 0, "spans": expected}
