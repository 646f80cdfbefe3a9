"""Helpers for the export tests: rows written at chosen times, integrations, reading exports back."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tracehouse.blobs import BlobStore
from tracehouse.clickhouse import ClickHouse, Workload
from tracehouse.export.crypto import SecretBox
from tracehouse.export.integrations import IntegrationRequest, upsert_integration
from tracehouse.export.service import ExportConfig, ExportJob

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
TS = pa.timestamp("ms", tz="UTC")
BOX = SecretBox("5e" * 32)  # the test ENCRYPTION_KEY for integrations with secrets


def _arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, pa.DataType] = {
        "id": pa.string(),
        "project_id": pa.string(),
        "name": pa.string(),
        "event_ts": TS,
        "is_deleted": pa.uint8(),
    }
    if table == "observations":
        columns |= {"trace_id": pa.string(), "type": pa.string(), "start_time": TS, "input": pa.string()}
    else:
        columns |= {"timestamp": TS}
    if table == "traces":
        columns |= {"input": pa.string()}
    if table == "scores":
        columns |= {"value": pa.float64(), "data_type": pa.string(), "source": pa.string(), "trace_id": pa.string()}
    schema = pa.schema([(name, kind) for name, kind in columns.items()])
    return pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows], schema)


async def write_rows(ch: ClickHouse, table: str, project_id: str, rows: list[dict[str, Any]]) -> None:
    """Insert row versions with the given `event_ts` (as if written then). Fills required columns."""
    filled = []
    for row in rows:
        row = {"name": "n", "is_deleted": 0, "project_id": project_id, **row}
        row.setdefault("timestamp", row["event_ts"])
        if table == "observations":
            row.setdefault("start_time", row["event_ts"])
            row.setdefault("type", "SPAN")
            row.setdefault("trace_id", "t-" + row["id"])
        if table == "scores":
            row |= {"value": row.get("value", 1.0), "data_type": "NUMERIC", "source": "API"}
        filled.append(row)
    await ch.insert_arrow(table, _arrow(table, filled), workload=Workload.INGESTION)


async def current_state(ch: ClickHouse, table: str, project_id: str) -> dict[str, dict[str, Any]]:
    """The table's live rows for the project (what ClickHouse serves), by id."""
    rows = await ch.query(
        f"SELECT id, name, event_ts FROM {table} FINAL WHERE project_id = {{p:String}} AND is_deleted = 0",
        {"p": project_id},
        workload=Workload.INTERACTIVE,
    )
    return {r["id"]: r for r in rows}


def make_integration(metadata: Any, project_id: str, **fields: Any) -> dict[str, Any]:
    body = {
        "projectId": project_id,
        "type": "LOCAL",
        "bucketName": f"exp-{uuid.uuid4().hex[:8]}",
        "exportFrequency": "hourly",
        "fileType": "PARQUET",
        "exportMode": "FULL_HISTORY",
        **fields,
    }
    # Saved as an operator would (CLI or admin key): moto on 127.0.0.1 is an allowlisted internal store.
    request = IntegrationRequest.model_validate(body)
    return upsert_integration(metadata, BOX, request, internal_allowed=True).model_dump(by_alias=True)


def config(data_dir: Any, **changes: Any) -> ExportConfig:
    values: dict[str, Any] = {
        "lag": timedelta(seconds=5),
        "catchup": timedelta(minutes=15),
        "min_window": timedelta(seconds=60),
        "row_group_rows": 1000,
        "trace_only_projects": frozenset(),
        "data_dir": data_dir,
        # The tests' S3 server (moto) listens on loopback, which the egress rule refuses by default.
        "allowed_destinations": "127.0.0.1",
    }
    values.update(changes)
    return ExportConfig(**values)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def job(
    services: Any, clock: Clock, *, cfg: ExportConfig | None = None, enqueued: list | None = None, **kwargs: Any
) -> ExportJob:
    async def enqueue(project_id: str, job_id: str) -> None:
        if enqueued is not None:
            enqueued.append(job_id)

    kwargs.setdefault("clickhouse", services.clickhouse)
    return ExportJob(
        metadata=services.metadata,
        box=BOX,
        config=cfg or config(services.settings.data_dir),
        metrics=services.metrics,
        enqueue=enqueue,
        clock=clock,
        **kwargs,
    )


async def run_until_idle(export: ExportJob, project_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """Run the job until it has nothing due (as the queue would, by chaining)."""
    results = []
    for _ in range(limit):
        result = await export.run(project_id, owner="test-job")
        results.append(result)
        if "window" not in result:
            return results
    raise AssertionError("export never became idle")


async def manifests(store: BlobStore, project_id: str) -> list[dict[str, Any]]:
    found = await store.list(f"{project_id}/manifests/")
    return [json.loads(await store.get(info.key)) for info in found]


def read_file(data: bytes, file_type: str, gzipped: bool) -> list[dict[str, Any]]:
    if gzipped:
        data = gzip.decompress(data)
    if file_type == "PARQUET":
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if file_type == "JSONL":
        return [orjson.loads(line) for line in data.splitlines() if line]
    return pacsv.read_csv(io.BytesIO(data)).to_pylist()


async def exported_rows(store: BlobStore, project_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every manifested file, by table (files not in a manifest are ignored)."""
    out: dict[str, list[dict[str, Any]]] = {}
    prefix = store.config.key_prefix
    for manifest in await manifests(store, project_id):
        for entry in manifest["files"]:
            data = await store.get(entry["key"][len(prefix) :])
            rows = read_file(data, manifest["fileType"], manifest["compressed"])
            assert len(rows) == entry["rows"]
            out.setdefault(entry["table"], []).extend(rows)
    return out


def reduce_latest(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a reader does: newest version per id, deleted ones dropped."""
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["id"])
        if seen is None or _ts(row["event_ts"]) > _ts(seen["event_ts"]):
            latest[row["id"]] = row
    return {i: r for i, r in latest.items() if not r["is_deleted"]}


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
