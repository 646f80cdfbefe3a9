"""An export worker for the export crash test (run as `python export_child.py MODE ...`).

chDB allows one process per data directory, so everything that touches the test's ClickHouse runs
here, one process at a time, while the test process only reads the metadata DB and the bucket.

Modes:
- `load DATA_DIR BASE_MS`: migrate ClickHouse in DATA_DIR and insert `dataset(BASE_MS)`.
- `export DATA_DIR METADATA_URL PROJECT WRITE_DELAY_MS STALL_AFTER_PART`: run the export job until it
  has nothing due, as the queue would (one run per job, each job named after the cursor it starts
  from). Every write to the destination sleeps WRITE_DELAY_MS, so a kill lands mid-upload. Progress
  goes to stdout: `open KEY`, `part KEY` (the first multipart part is full), `commit KEY`,
  `done WINDOW_JSON`, `idle`. With STALL_AFTER_PART=1 the writer pauses for a while after its
  first full part, so the test can SIGKILL it with a multipart upload half done.
- `verify DATA_DIR METADATA_URL PROJECT`: print one JSON line: verify_export's report, and the
  current version of every id per table (what ClickHouse holds now).
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from export_helpers import BOX, config, write_rows
from tracehouse.blobs import BlobStore
from tracehouse.blobs.store import SyncBlobWriter
from tracehouse.clickhouse import ClickHouse, Workload, migrate_clickhouse
from tracehouse.export import state
from tracehouse.export.destination import destination_config
from tracehouse.export.integrations import Integration
from tracehouse.export.service import ExportJob, job_id
from tracehouse.export.verify import verify_export
from tracehouse.logging import configure_logging
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.settings import load_settings

PROJECT = "crash-p"
MiB = 1024 * 1024
PART_SIZE = 5 * MiB  # S3's smallest part: a file larger than this is a real multipart upload
SPAN = timedelta(hours=4)  # the loaded rows' event_ts lie in [base, base + SPAN)
TRACES = 500
BURST = 1000  # observations with large inputs in one 15-minute window: one file > PART_SIZE
BURST_AT = timedelta(hours=2)
STALL_S = 20.0


# --- the data set (the test imports this to know what was loaded) -----------------------------
def _text(seed: int, size: int) -> str:
    """Incompressible text (base64 of random bytes), so file sizes track row counts."""
    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4)).decode()


def dataset(base_ms: int, *, with_inputs: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Row versions per table. Some traces get a second version 45 minutes later and some
    observations a tombstone 30 minutes later (both inside the span), so a correct export holds
    several versions of one id in different windows and readers must keep the newest."""
    base = datetime.fromtimestamp(base_ms / 1000, UTC)
    end = base + SPAN
    step = SPAN / TRACES
    traces: list[dict[str, Any]] = []
    observations: list[dict[str, Any]] = []
    for i in range(TRACES):
        ts = base + i * step
        traces.append({"id": f"t{i}", "event_ts": ts, "name": "v1", "input": _text(i, 2048) if with_inputs else None})
        observations.append(
            {
                "id": f"o{i}",
                "trace_id": f"t{i}",
                "event_ts": ts + timedelta(seconds=1),
                "input": _text(10**6 + i, 2048) if with_inputs else None,
            }
        )
        if i % 7 == 3 and ts + timedelta(minutes=45) < end:
            traces.append({"id": f"t{i}", "event_ts": ts + timedelta(minutes=45), "name": "v2", "input": "v2"})
        if i % 11 == 5 and ts + timedelta(minutes=30) < end:
            observations.append(
                {
                    "id": f"o{i}",
                    "trace_id": f"t{i}",
                    "event_ts": ts + timedelta(minutes=30),
                    "is_deleted": 1,
                    "input": None,
                }
            )
    burst_step = timedelta(minutes=15) / BURST
    for j in range(BURST):
        observations.append(
            {
                "id": f"b{j}",
                "trace_id": f"t{j % TRACES}",
                "event_ts": base + BURST_AT + j * burst_step + timedelta(milliseconds=1),
                "input": _text(2 * 10**6 + j, 8192) if with_inputs else None,
            }
        )
    return {"traces": traces, "observations": observations}


# --- a slow destination ---------------------------------------------------------------------
def say(*parts: Any) -> None:
    print(*parts, flush=True)


class _SlowWriter:
    """Passes writes through to the real multipart writer, sleeping before each one."""

    def __init__(self, inner: SyncBlobWriter, key: str, delay_s: float, stall_after_part: bool) -> None:
        self._inner = inner
        self._key = key
        self._delay_s = delay_s
        self._stall = stall_after_part
        self._told_part = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        time.sleep(self._delay_s)
        written = self._inner.write(data)
        if not self._told_part and self._inner.tell() > PART_SIZE:
            self._told_part = True
            say("part", self._key)
            if self._stall:
                time.sleep(STALL_S)  # the test kills us here, with the first part uploading or stored
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SlowStore(BlobStore):
    def __init__(self, integration: Integration, data_dir: Path, delay_s: float, stall_after_part: bool) -> None:
        super().__init__(destination_config(integration, data_dir))
        self._delay_s = delay_s
        self._stall = stall_after_part

    @contextmanager
    def open_sync_writer(self, key: str, *, part_size: int = PART_SIZE) -> Iterator[Any]:
        full_key = self.config.key_prefix + key
        say("open", full_key)
        with super().open_sync_writer(key, part_size=PART_SIZE) as writer:
            yield _SlowWriter(writer, full_key, self._delay_s, self._stall)
        say("commit", full_key)


# --- modes ------------------------------------------------------------------------------------
def _clickhouse(data_dir: str) -> ClickHouse:
    return ClickHouse.from_settings(load_settings(data_dir=Path(data_dir)))


async def load(data_dir: str, base_ms: int) -> None:
    ch = _clickhouse(data_dir)
    try:
        await migrate_clickhouse(ch)
        for table, rows in dataset(base_ms).items():
            for start in range(0, len(rows), 500):
                await write_rows(ch, table, PROJECT, rows[start : start + 500])
    finally:
        ch.close()
    say("loaded")


async def export(data_dir: str, metadata_url: str, project_id: str, delay_ms: float, stall: bool) -> None:
    ch = _clickhouse(data_dir)
    metadata = MetadataDB(metadata_url)

    def store_for(integration: Integration) -> BlobStore:
        return SlowStore(integration, Path(data_dir), delay_ms / 1000, stall)

    job = ExportJob(
        clickhouse=ch,
        metadata=metadata,
        box=BOX,
        config=config(Path(data_dir), row_group_rows=200),
        metrics=Metrics(),
        store_for=store_for,
    )
    say("started")
    try:
        for _ in range(500):
            integration = state.load_integration(metadata, BOX, project_id)
            assert integration is not None
            # The queue's job id for this step: the scheduler and the job's own chaining both name it
            # after the cursor, so a job killed here is re-run under the same id (and lease owner).
            owner = job_id(project_id, integration.last_sync_at)
            result = await job.run(project_id, owner=owner)
            if "window" not in result:
                say("idle", json.dumps(result))
                return
            say("done", json.dumps(result["window"]))
        raise SystemExit("the export never became idle")
    finally:
        ch.close()
        metadata.dispose()


async def verify(data_dir: str, metadata_url: str, project_id: str) -> None:
    ch = _clickhouse(data_dir)
    metadata = MetadataDB(metadata_url)
    try:
        integration = state.load_integration(metadata, BOX, project_id)
        assert integration is not None
        store = BlobStore(destination_config(integration, Path(data_dir)))
        report = await verify_export(ch, store, project_id)
        current = {}
        for table in ("traces", "observations"):
            rows = await ch.query(
                f"SELECT id, toUnixTimestamp64Milli(max(event_ts)) AS ts, argMax(is_deleted, event_ts) AS deleted "
                f"FROM {table} WHERE project_id = {{p:String}} GROUP BY id",
                {"p": project_id},
                workload=Workload.EXPORT,
            )
            current[table] = {r["id"]: [int(r["ts"]), int(r["deleted"])] for r in rows}
        say(json.dumps({"report": report.as_json(), "current": current}))
    finally:
        ch.close()
        metadata.dispose()


if __name__ == "__main__":
    configure_logging("warning", "json")
    mode, *args = sys.argv[1:]
    if mode == "load":
        asyncio.run(load(args[0], int(args[1])))
    elif mode == "export":
        asyncio.run(export(args[0], args[1], args[2], float(args[3]), args[4] == "1"))
    elif mode == "verify":
        asyncio.run(verify(args[0], args[1], args[2]))
    else:
        raise SystemExit(f"unknown mode {mode}")
