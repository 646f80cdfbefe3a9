"""The production topology end to end: `tracehouse web`, `worker --role ingestion` and
`worker --role export` as separate OS processes against PostgreSQL (when CI gives one, else a shared
SQLite file), Redis, moto S3 and a ClickHouse HTTP endpoint (the engine process here; a real server in
production), each workload class as its own ClickHouse user.

- data flows through: the real langfuse SDK ingests, the read API returns what was sent, the export
  worker exports it to S3 on schedule;
- roles are separate, seen from outside: each worker's own metrics count jobs of its own queues only;
- nothing is lost on a kill: the export worker is SIGKILLed mid catch-up, a new one resumes, and
  `tracehouse export verify` finds every row exactly once;
- routing: the engine's query log shows export queries under the export user with the export profile's
  settings, reads under the interactive user and inserts under the ingestion user.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ACCESS_KEY, REGION, SECRET_KEY, free_port
from test_cli import Proc
from test_sdk import sdk_dir
from tracehouse.supervised import CLASS_USERS, users_file

pytestmark = pytest.mark.slow  # five processes, an SDK subprocess and a scheduled export

PUBLIC, SECRET = "pk-lf-topology", "sk-lf-topology"
PROJECT = "topology"
ADMIN = "topology-admin"
SDK_SCRIPTS = Path(__file__).with_name("sdk")
BACKFILL = 600


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _until(check: Any, what: str, timeout: float = 120, every: float = 0.5, describe: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not reached within {timeout} s" + (f"; {describe()}" if describe else ""))


def _sdk(name: str, script: str, url: str, *args: str) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(sdk_dir(name)),
        "PK": PUBLIC,
        "SK": SECRET,
        "BASE_URL": url,
        "OTEL_SDK_DISABLED": "false",
    }
    done = subprocess.run(
        [sys.executable, str(SDK_SCRIPTS / script), *args], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def topology(tmp_path, redis_url, metadata_url, key_prefix, moto_endpoint, bucket):
    engine_port = free_port()
    passwords = {variable: secrets.token_hex(8) for _, variable in CLASS_USERS.values()}
    engine = Proc(
        [
            "engine",
            "--data-dir",
            str(tmp_path / "engine"),
            "--port",
            str(engine_port),
            "--users-file",
            str(users_file()),
        ],
        passwords,
        tmp_path,
    )
    procs = [engine]
    engine_url = f"http://127.0.0.1:{engine_port}"
    try:
        engine.wait_for("engine listening")
        common = {
            "DATABASE_URL": metadata_url,
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": key_prefix,
            **{
                variable: f"http://{user}:{passwords[secret]}@127.0.0.1:{engine_port}"
                for variable, (user, secret) in CLASS_USERS.items()
            },
            # Raw events live in S3, shared by the web process that accepts and the worker that merges.
            "LANGFUSE_S3_EVENT_UPLOAD_BUCKET": bucket,
            "LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT": moto_endpoint,
            "LANGFUSE_S3_EVENT_UPLOAD_ACCESS_KEY_ID": ACCESS_KEY,
            "LANGFUSE_S3_EVENT_UPLOAD_SECRET_ACCESS_KEY": SECRET_KEY,
            "LANGFUSE_S3_EVENT_UPLOAD_REGION": REGION,
            "LANGFUSE_S3_EVENT_UPLOAD_FORCE_PATH_STYLE": "true",
            "LANGFUSE_S3_EVENT_UPLOAD_PREFIX": "events/",
            "LANGFUSE_INIT_PROJECT_ID": PROJECT,
            "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": PUBLIC,
            "LANGFUSE_INIT_PROJECT_SECRET_KEY": SECRET,
            "ADMIN_API_KEY": ADMIN,
            "ENCRYPTION_KEY": "ab" * 32,
            "TRACEHOUSE_EXPORT_ALLOWED_DESTINATIONS": "127.0.0.1",
            # Exports keep up within seconds here: a short safety lag needs a short insert timeout.
            "TRACEHOUSE_CLICKHOUSE_INGESTION_TIMEOUT_MS": "2000",
            "TRACEHOUSE_EXPORT_SAFETY_LAG_MS": "2000",
            "TRACEHOUSE_EXPORT_SCHEDULE_INTERVAL_S": "1",
            "LANGFUSE_BLOB_STORAGE_EXPORT_CATCHUP_INTERVAL_MS": "2000",
            "TRACEHOUSE_QUEUE_LOCK_DURATION_MS": "3000",
            "TRACEHOUSE_QUEUE_STALLED_INTERVAL_MS": "1000",
        }
        # Migrations as an operator runs them: as the engine's `default` user.
        migrated = subprocess.run(
            [sys.executable, "-m", "tracehouse", "migrate"],
            env={
                **os.environ,
                **common,
                "TRACEHOUSE_DATA_DIR": str(tmp_path / "migrate"),
                "CLICKHOUSE_URL": f"http://default@127.0.0.1:{engine_port}",
                "TRACEHOUSE_CLICKHOUSE_INGESTION_URL": "",
                "CLICKHOUSE_EXPORT_URL": "",
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        web_port, ingestion_health, export_health = free_port(), free_port(), free_port()

        def start(name: str, args: list[str], **extra: str) -> Proc:
            proc = Proc(args, {**common, "TRACEHOUSE_DATA_DIR": str(tmp_path / name), **extra}, tmp_path)
            procs.append(proc)
            return proc

        web = start("web", ["web", "--port", str(web_port)])
        workers = {
            "ingestion": start(
                "ingestion", ["worker", "--role", "ingestion"], TRACEHOUSE_WORKER_PORT=str(ingestion_health)
            ),
            "export": start("export", ["worker", "--role", "export"], TRACEHOUSE_WORKER_PORT=str(export_health)),
        }
        for worker in workers.values():
            worker.wait_for('"worker_started"', where="err")
        base = f"http://127.0.0.1:{web_port}"
        _until(lambda: _ready(base), "web ready", timeout=60)
        yield {
            "base": base,
            "engine": engine_url,
            "web": web,
            "workers": workers,
            "start": start,
            "health": {"ingestion": ingestion_health, "export": export_health},
            "tmp": tmp_path,
            "common": common,
            "moto": moto_endpoint,
            "bucket": bucket,
        }
    finally:
        for proc in procs:  # shown by pytest when the test fails
            print(f"--- {proc.popen.args[3:6]} exit={proc.popen.poll()}", *proc.err[-30:], sep="\n")
        for proc in reversed(procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(20)
            proc.kill()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/ready", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _integration(topology: dict[str, Any], start: datetime) -> dict[str, Any]:
    return {
        "projectId": PROJECT,
        "type": "S3_COMPATIBLE",
        "bucketName": topology["bucket"],
        "endpoint": topology["moto"],
        "region": REGION,
        "accessKeyId": ACCESS_KEY,
        "secretAccessKey": SECRET_KEY,
        "forcePathStyle": True,
        "prefix": "exports/",
        "exportFrequency": "every_15_minutes",
        "fileType": "JSONL",
        "compressed": False,
        "exportMode": "FROM_CUSTOM_DATE",
        "exportStartDate": start.isoformat(),
    }


def _status(topology: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.get(
        f"{topology['base']}/api/public/integrations/blob-storage/status",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    answer.raise_for_status()
    [status] = answer.json()["data"]
    return status


def _verify(topology: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, **topology["common"], "TRACEHOUSE_DATA_DIR": str(topology["tmp"] / "verify")}
    done = subprocess.run(
        [sys.executable, "-m", "tracehouse", "export", "verify", "--project", PROJECT, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return {"code": done.returncode, **json.loads(done.stdout)}


def _query_log(topology: dict[str, Any], user: str) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{topology['engine']}/engine/query_log", params={"user_name": user, "limit": "10000"}, timeout=10
    )
    answer.raise_for_status()
    return [json.loads(line) for line in answer.text.splitlines()]


def test_three_roles_as_separate_processes_ingest_read_export_and_survive_a_kill(topology, s3_client):
    base = topology["base"]
    # Backfilled history the export worker must catch up on: BACKFILL traces with versions one
    # second apart, 40 to 30 minutes ago, loaded by an operator as the engine's default user. The
    # export catches up in 2 s chunks (some 300 windows), so it is mid catch-up when killed below.
    data_start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    _backfill(topology, data_start)
    saved = httpx.put(
        f"{base}/api/public/integrations/blob-storage",
        json=_integration(topology, data_start - timedelta(minutes=1)),
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    assert saved.status_code == 200, saved.text

    # --- data flows through: the 2.x SDK sends a batch, the read API returns it -----------------------
    sent = _sdk("v2", "send_v2.py", base)
    read = _until(lambda: _read_back(base, sent["trace_id"]), "the SDK's trace readable", timeout=90)
    trace = read["trace"]
    assert (trace["id"], trace["name"], trace["userId"], trace["tags"]) == (
        sent["trace_id"],
        "v2-trace",
        "u-2",
        ["legacy"],
    )
    assert trace["observations"] == sorted([sent["span_id"], sent["generation_id"], sent["event_id"]])
    assert trace["scores"] == ["rating"] and trace["output"] == {"a": "hi there"}

    # --- nothing is lost on a kill: SIGKILL the export worker mid catch-up, start another -------------
    _until(
        lambda: _manifests(s3_client, topology["bucket"]) >= 10,
        "the export under way",
        timeout=120,
        describe=lambda: _status(topology),
    )
    killed = topology["workers"]["export"]
    killed.popen.kill()
    killed.popen.wait(10)
    killed_at = _status(topology)
    data_end = data_start + timedelta(seconds=BACKFILL)
    assert killed_at["exportedUntil"] is not None, killed_at
    assert datetime.fromisoformat(killed_at["exportedUntil"]) < data_end, killed_at  # mid catch-up
    replacement = topology["start"](
        "export-2", ["worker", "--role", "export"], TRACEHOUSE_WORKER_PORT=str(topology["health"]["export"])
    )
    replacement.wait_for('"worker_started"', where="err")
    caught_up = _until(
        lambda: _caught_up(topology, data_end),
        "the export caught up after the restart",
        timeout=240,
        describe=lambda: _status(topology),
    )
    assert caught_up["lastError"] is None, caught_up
    report = _verify(topology)
    assert report["code"] == 0 and report["ok"] is True, report
    traces = report["tables"]["traces"]
    assert traces["missing"] == 0 and traces["duplicated"] == 0, traces
    exported = _exported_ids(s3_client, topology["bucket"], "traces")
    assert sorted(exported) == sorted(f"backfill-{n}" for n in range(BACKFILL))  # each exactly once

    # --- roles are separate, seen from each worker's own metrics --------------------------------------
    ingestion_metrics = httpx.get(f"http://127.0.0.1:{topology['health']['ingestion']}/metrics", timeout=10).text
    export_metrics = httpx.get(f"http://127.0.0.1:{topology['health']['export']}/metrics", timeout=10).text
    assert _metric(ingestion_metrics, "queue_jobs_total", queue="ingestion-queue", status="completed") >= 1
    assert _metric(export_metrics, "queue_jobs_total", queue="blobstorage-integration-processing-queue") >= 1
    for queue in ("blobstorage-integration-queue", "blobstorage-integration-processing-queue", "batch-export-queue"):
        assert _metric(ingestion_metrics, "queue_jobs_total", queue=queue) == 0, queue
    for queue in ("ingestion-queue", "cloud-usage-metering-queue"):
        assert _metric(export_metrics, "queue_jobs_total", queue=queue) == 0, queue

    # --- routing: each class reached the engine as its own user, with its own profile -----------------
    export_queries = _query_log(topology, "tracehouse_export")
    windows = [q for q in export_queries if "event_ts >= fromUnixTimestamp64Milli" in q["query"]]
    assert windows, "the export queries were meant to reach the engine as the export user"
    assert all(q["profile"] == "tracehouse_export" for q in windows)
    assert {q["settings"].get("os_thread_priority") for q in windows} == {"19"}
    assert {q["settings"].get("priority") for q in windows} == {"5"}
    interactive = _query_log(topology, "tracehouse_interactive")
    assert any("FROM traces" in q["query"] for q in interactive)
    assert not any("event_ts >= fromUnixTimestamp64Milli" in q["query"] for q in interactive)
    assert {q["settings"].get("priority") for q in interactive} == {"1"}
    inserts = {
        q["query"].split("(")[0].strip()
        for q in _query_log(topology, "tracehouse_ingestion")
        if q["query"].startswith("INSERT")
    }
    assert {"INSERT INTO `traces`", "INSERT INTO `observations`", "INSERT INTO `scores`"} <= inserts, inserts
    assert not any(q["query"].startswith("INSERT") for q in interactive + export_queries)


def _read_back(base: str, trace_id: str) -> dict[str, Any] | None:
    auth = (PUBLIC, SECRET)
    answer = httpx.get(f"{base}/api/public/traces/{trace_id}", auth=auth, timeout=30)
    if answer.status_code != 200:
        return None
    trace = answer.json()
    if trace.get("output") is None or len(trace.get("observations", [])) < 3 or not trace.get("scores"):
        return None  # the trace's later events are still being merged
    return {
        "trace": {
            **trace,
            "observations": sorted(o["id"] for o in trace["observations"]),
            "scores": [s["name"] for s in trace["scores"]],
        }
    }


def _manifests(s3: Any, bucket: str) -> int:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"exports/{PROJECT}/manifests/")
    return int(listed.get("KeyCount", 0))


def _caught_up(topology: dict[str, Any], data_end: datetime) -> dict[str, Any] | None:
    status = _status(topology)
    until = status.get("exportedUntil")
    if until is None or datetime.fromisoformat(until) < data_end or status["pendingWindow"] is not None:
        return None
    return status


def _exported_ids(s3: Any, bucket: str, table: str) -> list[str]:
    """Every id in the table's files (an id twice is in the list twice)."""
    ids: list[str] = []
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"exports/{PROJECT}/{table}/", MaxKeys=1000)
    assert not listed["IsTruncated"]
    for item in listed.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
        ids.extend(json.loads(line)["id"] for line in body.splitlines() if line)
    return ids


def _backfill(topology: dict[str, Any], start: datetime) -> None:
    start_ms = int(start.timestamp() * 1000)
    sql = (
        "INSERT INTO traces (id, project_id, timestamp, name, event_ts, is_deleted) "
        "SELECT concat('backfill-', toString(number)), {project:String}, "
        "fromUnixTimestamp64Milli(toInt64({start:Int64} + number * 1000)), 'backfill', "
        "fromUnixTimestamp64Milli(toInt64({start:Int64} + number * 1000)), 0 FROM numbers({n:UInt32})"
    )
    params = {"param_project": PROJECT, "param_start": str(start_ms), "param_n": str(BACKFILL)}
    answer = httpx.post(topology["engine"], params={"user": "default", "query": sql, **params}, timeout=60)
    assert answer.status_code == 200, answer.text
