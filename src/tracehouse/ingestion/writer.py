"""A batching ClickHouse writer whose acknowledgements mean "verified on disk".

Callers hand rows to `write(table, rows)` and await it. Rows from many jobs are collected per
table and flushed as one Arrow insert when the batch is full or the interval passes. Every flush
gets its own `event_ts` stamp (strictly increasing per table), and after the insert the writer
counts the rows carrying that stamp: only when all are present do the callers' awaits return.
A failed insert is retried with backoff; an insert that failed with a timeout may still have
committed, so the writer checks for the rows before inserting again. After `max_attempts` the
callers get `WriteFailed` and nothing is dropped silently: the job fails and the queue retries it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from tracehouse.clickhouse import ClickHouse, ClickHouseError, Workload
from tracehouse.logging import get_logger
from tracehouse.metrics import Metrics

TS = pa.timestamp("ms", tz="UTC")
STR_MAP = pa.map_(pa.string(), pa.string())
INT_MAP = pa.map_(pa.string(), pa.uint64())
DEC_MAP = pa.map_(pa.string(), pa.decimal128(18, 12))

SCHEMAS: dict[str, pa.Schema] = {
    "traces": pa.schema(
        [
            ("id", pa.string()),
            ("project_id", pa.string()),
            ("timestamp", TS),
            ("name", pa.string()),
            ("user_id", pa.string()),
            ("session_id", pa.string()),
            ("release", pa.string()),
            ("version", pa.string()),
            ("environment", pa.string()),
            ("metadata", STR_MAP),
            ("tags", pa.list_(pa.string())),
            ("public", pa.bool_()),
            ("bookmarked", pa.bool_()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("created_at", TS),
            ("updated_at", TS),
            ("event_ts", TS),
            ("is_deleted", pa.uint8()),
        ]
    ),
    "observations": pa.schema(
        [
            ("id", pa.string()),
            ("trace_id", pa.string()),
            ("project_id", pa.string()),
            ("type", pa.string()),
            ("parent_observation_id", pa.string()),
            ("start_time", TS),
            ("end_time", TS),
            ("name", pa.string()),
            ("metadata", STR_MAP),
            ("level", pa.string()),
            ("status_message", pa.string()),
            ("version", pa.string()),
            ("environment", pa.string()),
            ("input", pa.string()),
            ("output", pa.string()),
            ("provided_model_name", pa.string()),
            ("model_parameters", pa.string()),
            ("provided_usage_details", INT_MAP),
            ("usage_details", INT_MAP),
            ("provided_cost_details", DEC_MAP),
            ("cost_details", DEC_MAP),
            ("total_cost", pa.decimal128(18, 12)),
            ("completion_start_time", TS),
            ("prompt_name", pa.string()),
            ("prompt_version", pa.uint16()),
            ("created_at", TS),
            ("updated_at", TS),
            ("event_ts", TS),
            ("is_deleted", pa.uint8()),
        ]
    ),
    "scores": pa.schema(
        [
            ("id", pa.string()),
            ("project_id", pa.string()),
            ("timestamp", TS),
            ("environment", pa.string()),
            ("trace_id", pa.string()),
            ("observation_id", pa.string()),
            ("session_id", pa.string()),
            ("dataset_run_id", pa.string()),
            ("name", pa.string()),
            ("value", pa.float64()),
            ("source", pa.string()),
            ("comment", pa.string()),
            ("metadata", STR_MAP),
            ("config_id", pa.string()),
            ("queue_id", pa.string()),
            ("execution_trace_id", pa.string()),
            ("data_type", pa.string()),
            ("string_value", pa.string()),
            ("long_string_value", pa.string()),
            ("created_at", TS),
            ("updated_at", TS),
            ("event_ts", TS),
            ("is_deleted", pa.uint8()),
            ("ingestion_api_key", pa.string()),
            ("ingestion_sdk_name", pa.string()),
            ("ingestion_sdk_version", pa.string()),
        ]
    ),
    "ingestion_event_log": pa.schema(
        [
            ("project_id", pa.string()),
            ("entity", pa.string()),
            ("entity_id", pa.string()),
            ("event_id", pa.string()),
            ("event_type", pa.string()),
            ("event_time", TS),
            ("body", pa.string()),
            ("batch_key", pa.string()),
            ("received_at", TS),
            ("event_ts", TS),
        ]
    ),
}


# Each table's sorting key, as (SQL expression, ClickHouse type, how to compute it from a row). Verification
# looks rows up by their full key, so it reads a few granules instead of scanning a project.
def _day(value: Any) -> str:
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).date().isoformat()


SORT_KEYS: dict[str, list[tuple[str, str, Any]]] = {
    "traces": [
        ("project_id", "String", lambda r: r["project_id"]),
        ("toDate(timestamp)", "Date", lambda r: _day(r["timestamp"])),
        ("id", "String", lambda r: r["id"]),
    ],
    "observations": [
        ("project_id", "String", lambda r: r["project_id"]),
        ("type", "String", lambda r: r["type"]),
        ("toDate(start_time)", "Date", lambda r: _day(r["start_time"])),
        ("id", "String", lambda r: r["id"]),
    ],
    "scores": [
        ("project_id", "String", lambda r: r["project_id"]),
        ("toDate(timestamp)", "Date", lambda r: _day(r["timestamp"])),
        ("name", "String", lambda r: r["name"]),
        ("id", "String", lambda r: r["id"]),
    ],
    "ingestion_event_log": [
        ("project_id", "String", lambda r: r["project_id"]),
        ("entity", "String", lambda r: r["entity"]),
        ("entity_id", "String", lambda r: r["entity_id"]),
        ("event_id", "String", lambda r: r["event_id"]),
    ],
}


class WriteFailed(Exception):
    """Rows could not be written and verified within the writer's attempts."""


@dataclass
class _Pending:
    rows: list[dict[str, Any]]
    future: asyncio.Future[None]


@dataclass
class _TableBuffer:
    pending: list[_Pending] = field(default_factory=list)
    rows: int = 0
    last_stamp_ms: int = 0
    flushing: asyncio.Lock = field(default_factory=asyncio.Lock)


def _to_arrow(table: str, rows: list[dict[str, Any]]) -> pa.Table:
    # Map columns take Python dicts directly; missing keys become nulls.
    return pa.Table.from_pylist(rows, schema=SCHEMAS[table])


class ClickHouseWriter:
    def __init__(
        self,
        clickhouse: ClickHouse,
        *,
        batch_size: int = 1000,
        interval_ms: int = 100,
        max_attempts: int = 3,
        retry_delay_ms: int = 100,
        metrics: Metrics,
    ) -> None:
        self._ch = clickhouse
        self._batch_size = batch_size
        self._interval_s = interval_ms / 1000
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_ms / 1000
        self._metrics = metrics
        self._buffers: dict[str, _TableBuffer] = {t: _TableBuffer() for t in SCHEMAS}
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop only keeps weak ones
        self._log = get_logger("tracehouse.ingestion.writer")

    async def write(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Return once `rows` are in ClickHouse and verified; raise WriteFailed otherwise."""
        if not rows:
            return
        if self._timer is None:
            self._timer = asyncio.create_task(self._tick())
        buffer = self._buffers[table]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        buffer.pending.append(_Pending(rows, future))
        buffer.rows += len(rows)
        if buffer.rows >= self._batch_size:
            self._spawn(table)
        await future

    def _spawn(self, table: str) -> None:
        task = asyncio.create_task(self._flush(table))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            for table, buffer in self._buffers.items():
                if buffer.pending and not buffer.flushing.locked():
                    self._spawn(table)

    def _stamp(self, buffer: _TableBuffer) -> int:
        now_ms = int(time.time() * 1000)
        buffer.last_stamp_ms = max(now_ms, buffer.last_stamp_ms + 1)
        return buffer.last_stamp_ms

    async def _flush(self, table: str) -> None:
        buffer = self._buffers[table]
        async with buffer.flushing:
            if not buffer.pending:
                return
            taken: list[_Pending] = []
            count = 0
            while buffer.pending and (not taken or count + len(buffer.pending[0].rows) <= self._batch_size):
                item = buffer.pending.pop(0)
                taken.append(item)
                count += len(item.rows)
            buffer.rows -= count
            try:
                await self._write_verified(table, buffer, [r for item in taken for r in item.rows])
            except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
                for item in taken:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            for item in taken:
                if not item.future.done():
                    item.future.set_result(None)
        if buffer.rows >= self._batch_size:
            self._spawn(table)

    async def _write_verified(self, table: str, buffer: _TableBuffer, rows: list[dict[str, Any]]) -> None:
        last_error: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            stamp_ms = self._stamp(buffer)
            stamp = datetime.fromtimestamp(stamp_ms / 1000, UTC)
            now = datetime.now(UTC)
            for row in rows:
                row["event_ts"] = stamp
                row.setdefault("updated_at", now)
            started = time.perf_counter()
            try:
                await self._ch.insert_arrow(table, _to_arrow(table, rows), workload=Workload.INGESTION)
            except Exception as exc:  # noqa: BLE001 - classified below
                last_error = exc
                # A timeout can arrive after the insert committed: look before inserting again.
                if _maybe_committed(exc) and await self._present(table, rows, stamp_ms):
                    self._record(table, len(rows), time.perf_counter() - started)
                    return
                self._log.warning(
                    "clickhouse_write_retry", table=table, rows=len(rows), attempt=attempt, error=str(exc)[:500]
                )
                await asyncio.sleep(self._retry_delay_s * (2 ** (attempt - 1)))
                continue
            if await self._present(table, rows, stamp_ms):
                self._record(table, len(rows), time.perf_counter() - started)
                return
            last_error = WriteFailed(f"{table}: inserted rows not found on verification")
        raise WriteFailed(
            f"{table}: {len(rows)} rows not written after {self._max_attempts} attempts: {str(last_error)[:500]}"
        )

    async def _present(self, table: str, rows: list[dict[str, Any]], stamp_ms: int) -> bool:
        key = SORT_KEYS[table]
        expected = {tuple(compute(r) for _, _, compute in key) for r in rows}
        columns = ", ".join(expr for expr, _, _ in key)
        types = ", ".join(kind for _, kind, _ in key)
        started = time.perf_counter()
        found = await self._ch.query(
            f"SELECT count() AS n FROM {table} WHERE ({columns}) IN {{keys:Array(Tuple({types}))}} "
            f"AND event_ts = fromUnixTimestamp64Milli({{stamp:Int64}})",
            {"keys": sorted(expected), "stamp": stamp_ms},
            workload=Workload.INGESTION,
        )
        self._metrics.ingestion_verify_seconds.observe(time.perf_counter() - started)
        return int(found[0]["n"]) >= len(expected)

    def _record(self, table: str, rows: int, seconds: float) -> None:
        self._metrics.ingestion_rows_written.labels(table).inc(rows)
        self._metrics.ingestion_write_seconds.labels(table).observe(seconds)

    async def close(self) -> None:
        """Flush what is buffered, then stop the timer."""
        for table in self._buffers:
            while self._buffers[table].pending:
                await self._flush(table)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _maybe_committed(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(exc, ClickHouseError):
        return exc.kind.value == "TIMEOUT"
    text = str(exc).lower()
    return "timeout" in text or "timed out" in text
