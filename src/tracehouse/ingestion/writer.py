"""A batching ClickHouse writer whose acknowledgements mean "the server wrote every row".

Callers hand rows to `write(table, rows)` and await it. Rows from many jobs are collected per
table and flushed as one Arrow insert when the batch is full or the interval passes. Every flush
gets its own `event_ts` stamp (strictly increasing per table). The callers' awaits return only once
the server has acknowledged every row: the insert's own answer counts the rows written (ClickHouse's
summary); when it does not count them all, the writer counts the rows carrying the stamp instead.
(Counting after every insert made a third of the ingestion's queries and slowed interactive reads.)
A transient failure (timeout, lost connection, memory limit) is retried with backoff; an insert that
failed with a timeout may still have committed, so the writer checks for the rows before inserting
again. Any other failure means some row cannot be written: the flush is bisected, job by job, until
the jobs whose own rows fail stand alone, and every other job's rows are written. Only those jobs get
`WriteFailed`, with the real reason; nothing is dropped silently (the queue retries the job and dead-
letters it in the end).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import pyarrow as pa

from tracehouse.clickhouse import ClickHouse, ClickHouseError, ClickHouseErrorKind, Table, Workload, catalog
from tracehouse.clickhouse.catalog import arrow_type, split_type
from tracehouse.errors import DependencyUnavailable
from tracehouse.logging import get_logger
from tracehouse.metrics import Metrics

# The columns the writer fills, in insert order; the others take their ClickHouse defaults. Types come
# from the catalog, so an insert always carries exactly the column types the migrations created.
WRITTEN_COLUMNS: dict[str, tuple[str, ...]] = {
    "traces": (
        "id",
        "project_id",
        "timestamp",
        "name",
        "user_id",
        "session_id",
        "release",
        "version",
        "environment",
        "metadata",
        "tags",
        "public",
        "bookmarked",
        "input",
        "output",
        "created_at",
        "updated_at",
        "event_ts",
        "is_deleted",
    ),
    "observations": (
        "id",
        "trace_id",
        "project_id",
        "type",
        "parent_observation_id",
        "start_time",
        "end_time",
        "name",
        "metadata",
        "level",
        "status_message",
        "version",
        "environment",
        "input",
        "output",
        "provided_model_name",
        "internal_model_id",
        "model_parameters",
        "provided_usage_details",
        "usage_details",
        "provided_cost_details",
        "cost_details",
        "total_cost",
        "usage_pricing_tier_id",
        "usage_pricing_tier_name",
        "completion_start_time",
        "prompt_name",
        "prompt_version",
        "created_at",
        "updated_at",
        "event_ts",
        "is_deleted",
    ),
    "scores": (
        "id",
        "project_id",
        "timestamp",
        "environment",
        "trace_id",
        "observation_id",
        "session_id",
        "dataset_run_id",
        "name",
        "value",
        "source",
        "comment",
        "metadata",
        "config_id",
        "queue_id",
        "execution_trace_id",
        "data_type",
        "string_value",
        "long_string_value",
        "created_at",
        "updated_at",
        "event_ts",
        "is_deleted",
        "ingestion_api_key",
        "ingestion_sdk_name",
        "ingestion_sdk_version",
    ),
    "ingestion_event_log": (
        "project_id",
        "entity",
        "entity_id",
        "event_id",
        "event_type",
        "event_time",
        "body",
        "batch_key",
        "received_at",
        "event_ts",
    ),
}


def _arrow_schema(table: Table, names: tuple[str, ...]) -> pa.Schema:
    return pa.schema([(c.name, arrow_type(c.ch_type)) for c in table.columns_named(names)])


# Built once at import: flushes only look them up.
SCHEMAS: dict[str, pa.Schema] = {
    name: _arrow_schema(catalog.table(name), columns) for name, columns in WRITTEN_COLUMNS.items()
}


# Each table's sorting key, as (SQL expression, ClickHouse type, how to compute it from a row). Verification
# looks rows up by their full key, so it reads a few granules instead of scanning a project.
KeyPart = tuple[str, str, Callable[[dict[str, Any]], Any]]

_DAY_OF = re.compile(r"toDate\((\w+)\)")


def _day(value: Any) -> str:
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).date().isoformat()


def _key_part(table: Table, expression: str) -> KeyPart:
    if day := _DAY_OF.fullmatch(expression):
        column = day.group(1)
        return expression, "Date", lambda row: _day(row[column])
    ch_type = table.column(expression).ch_type  # a key that is neither a column nor a day raises here
    # Query parameters are plain values: LowCardinality is how a column is stored, not what it holds.
    head, args = split_type(ch_type)
    return expression, args[0] if head == "LowCardinality" else ch_type, itemgetter(expression)


SORT_KEYS: dict[str, list[KeyPart]] = {
    name: [_key_part(catalog.table(name), expression) for expression in catalog.table(name).sorting_key]
    for name in WRITTEN_COLUMNS
}

# The column each flush stamps and verification matches: the engine's version, so the newest write wins.
VERSION_COLUMNS: dict[str, str] = {name: catalog.table(name).version_column for name in WRITTEN_COLUMNS}


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
            await self._write_isolated(table, buffer, taken)
        if buffer.rows >= self._batch_size:
            self._spawn(table)

    async def _write_isolated(self, table: str, buffer: _TableBuffer, items: list[_Pending]) -> None:
        """Write the items' rows; when that fails for a reason retrying cannot fix, write each half on
        its own (recursively), so only the jobs whose own rows cannot be written fail."""
        try:
            await self._write_verified(table, buffer, [r for item in items for r in item.rows])
        except Exception as exc:  # noqa: BLE001 - isolated below, then handed to the waiters
            if len(items) == 1 or _transient(exc):
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc if isinstance(exc, WriteFailed) else _failed(table, item, exc))
                return
            self._log.warning(
                "clickhouse_write_isolating",
                table=table,
                jobs=len(items),
                rows=sum(len(i.rows) for i in items),
                error=str(exc)[:300],
            )
            middle = len(items) // 2
            await self._write_isolated(table, buffer, items[:middle])
            await self._write_isolated(table, buffer, items[middle:])
            return
        for item in items:
            if not item.future.done():
                item.future.set_result(None)

    async def _write_verified(self, table: str, buffer: _TableBuffer, rows: list[dict[str, Any]]) -> None:
        """Insert and verify `rows` under one fresh version stamp; transient failures are retried."""
        last_error: BaseException | None = None
        for attempt in range(1, self._max_attempts + 1):
            stamp_ms = self._stamp(buffer)
            stamp = datetime.fromtimestamp(stamp_ms / 1000, UTC)
            now = datetime.now(UTC)
            version = VERSION_COLUMNS[table]
            for row in rows:
                row[version] = stamp
                row.setdefault("updated_at", now)
            started = time.perf_counter()
            try:
                data = await asyncio.to_thread(_to_arrow, table, rows)  # thousands of rows: off the event loop
                written = await self._ch.insert_arrow(table, data, workload=Workload.INGESTION)
            except Exception as exc:  # noqa: BLE001 - classified below
                last_error = exc
                # A timeout can arrive after the insert committed: look before inserting again.
                if _maybe_committed(exc) and await self._present(table, rows, stamp_ms):
                    self._record(table, len(rows), time.perf_counter() - started)
                    return
                if not _transient(exc):
                    raise  # the data itself: retrying the same rows cannot help
                self._log.warning(
                    "clickhouse_write_retry", table=table, rows=len(rows), attempt=attempt, error=str(exc)[:500]
                )
                await asyncio.sleep(self._retry_delay_s * (2 ** (attempt - 1)))
                continue
            # The insert's answer counts the rows the server wrote: all of them is the verification. A
            # count that falls short (or a proxy that dropped ClickHouse's summary header) is checked
            # by reading the rows back under their stamp.
            if written == len(rows) or await self._present(table, rows, stamp_ms):
                self._record(table, len(rows), time.perf_counter() - started)
                return
            # Inserted but not found under its key: a value ClickHouse stored differently than sent.
            raise WriteFailed(f"{table}: inserted rows not found on verification")
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
            f"AND {VERSION_COLUMNS[table]} = fromUnixTimestamp64Milli({{stamp:Int64}})",
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


def _failed(table: str, item: _Pending, exc: BaseException) -> WriteFailed:
    return WriteFailed(
        f"{table}: {len(item.rows)} row(s) of this job cannot be written: {type(exc).__name__}: {str(exc)[:500]}"
    )


def _transient(exc: BaseException) -> bool:
    """Failures of the moment (the server, the network, memory), which a retry of the same rows can fix."""
    if _maybe_committed(exc) or isinstance(exc, ConnectionError | DependencyUnavailable):
        return True
    if isinstance(exc, ClickHouseError):
        if exc.kind in (ClickHouseErrorKind.MEMORY_LIMIT, ClickHouseErrorKind.OVERCOMMIT):
            return True
        text = str(exc).lower()
        return any(word in text for word in ("connection", "refused", "unavailable", "too many", "network"))
    return False


def _maybe_committed(exc: BaseException) -> bool:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return True
    if isinstance(exc, ClickHouseError):
        return exc.kind.value == "TIMEOUT"
    text = str(exc).lower()
    return "timeout" in text or "timed out" in text
