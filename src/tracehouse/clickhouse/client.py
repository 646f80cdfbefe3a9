"""One narrow ClickHouse interface with two backends: embedded chDB and an HTTP server.

Callers see four operations (query, command, insert Arrow, stream Arrow batches), each tagged with
a workload class. Both backends are blocking libraries, so the async methods run them in threads:
a blocked event loop makes BullMQ declare jobs stalled and run them twice.

Parameters use ClickHouse's server-side binding (`{name:Type}` in the SQL), which both backends
understand, so one SQL string serves both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa

from tracehouse.clickhouse.workload import (
    ClickHouseError,
    Workload,
    WorkloadSettings,
    classify_error,
    workload_settings,
)
from tracehouse.errors import DependencyUnavailable, one_line_reason
from tracehouse.settings import Settings

T = TypeVar("T")
Params = Mapping[str, Any] | None
QuerySettings = Mapping[str, Any]


class Backend(Protocol):
    """Blocking operations; `ClickHouse` moves them off the event loop."""

    target: str

    def query_arrow(self, sql: str, params: Params, settings: QuerySettings) -> pa.Table: ...

    def command(self, sql: str, params: Params, settings: QuerySettings) -> None: ...

    def insert_arrow(self, table: str, data: pa.Table, settings: QuerySettings) -> int: ...

    def stream_arrow(
        self, sql: str, params: Params, settings: QuerySettings, batch_rows: int
    ) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


def _params(params: Params) -> dict[str, Any] | None:
    return dict(params) if params else None


# Query parameters reach chDB as text in ClickHouse's escaped (TSV) form: a raw tab, newline or
# backslash in a string would be misread (an id with a backslash would never match itself).
_TSV_ESCAPES = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0", "\b": "\\b", "\f": "\\f"}
)


def _chdb_params(params: Params) -> dict[str, Any] | None:
    """chDB takes parameter values as text; arrays must be written as ClickHouse array literals."""
    if not params:
        return None
    return {
        k: _array_literal(v) if isinstance(v, list | set) else v.translate(_TSV_ESCAPES) if isinstance(v, str) else v
        for k, v in params.items()
    }


def _array_literal(values: Any) -> str:
    return "[" + ",".join(_literal(v) for v in values) + "]"


def _wrap_error(exc: BaseException) -> ClickHouseError:
    message = str(exc).strip() or type(exc).__name__
    return ClickHouseError(message, classify_error(message))


# --------------------------------------------------------------------------------------------
# chDB: the ClickHouse engine in-process
# --------------------------------------------------------------------------------------------
class _ChdbConnection:
    """A chDB connection plus the session settings currently applied to it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.applied: dict[str, Any] = {}

    def apply(self, settings: QuerySettings) -> None:
        # chDB has no per-call settings argument; SET is session-wide, so we track what is set
        # and change only the differences (cheap in-process, and correct across workload classes).
        statements = [f"{key} = DEFAULT" for key in self.applied if key not in settings]
        statements += [f"{k} = {_literal(v)}" for k, v in settings.items() if self.applied.get(k) != v]
        if statements:
            self.conn.query("SET " + ", ".join(statements))
            self.applied = dict(settings)


def _literal(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(_literal(v) for v in value) + ")"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return "'" + text.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0") + "'"


class ChdbBackend:
    """Embedded ClickHouse. One process owns a chDB directory; connections to it are pooled.

    Separate connections to the same path run queries in parallel with the GIL released, while
    one shared connection serializes; so each call takes a connection of its own from the pool.
    """

    def __init__(self, path: str) -> None:
        import chdb  # imported here: a 500 MB engine that HTTP-only deployments never load

        self._chdb = chdb
        self.path = path
        self.target = f"chdb://{path}"
        self._idle: queue.LifoQueue[_ChdbConnection] = queue.LifoQueue()
        self._all: list[_ChdbConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._release(self._open())  # fail now, not on the first query, if the path is unusable

    def _open(self) -> _ChdbConnection:
        try:
            conn = _ChdbConnection(self._chdb.connect(self.path))
        except RuntimeError as exc:
            reason = one_line_reason(exc)
            if "BAD_ARGUMENTS" in reason or "already initialized" in reason:
                reason += " (is another tracehouse process using this data directory?)"
            raise DependencyUnavailable("embedded ClickHouse (chDB)", self.path, reason) from None
        with self._lock:
            self._all.append(conn)
        return conn

    def _release(self, conn: _ChdbConnection) -> None:
        self._idle.put(conn)

    @contextmanager
    def _connection(self, settings: QuerySettings) -> Iterator[_ChdbConnection]:
        if self._closed:
            raise ClickHouseError("the ClickHouse client is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._open()
        try:
            conn.apply(settings)
            yield conn
        finally:
            self._release(conn)

    def query_arrow(self, sql: str, params: Params, settings: QuerySettings) -> pa.Table:
        with self._connection(settings) as c:
            try:
                return c.conn.query(sql, "ArrowTable", params=_chdb_params(params))
            except RuntimeError as exc:
                raise _wrap_error(exc) from None

    def command(self, sql: str, params: Params, settings: QuerySettings) -> None:
        with self._connection(settings) as c:
            try:
                c.conn.query(sql, "CSV", params=_chdb_params(params))
            except RuntimeError as exc:
                raise _wrap_error(exc) from None

    def insert_arrow(self, table: str, data: pa.Table, settings: QuerySettings) -> int:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        with self._connection(settings) as c:
            try:
                with c.conn.send_insert(f"INSERT INTO {table} ({columns})", "ArrowStream") as inserter:
                    inserter.append(sink.getvalue())
                    result = inserter.finish()
            except RuntimeError as exc:
                raise _wrap_error(exc) from None
        return int(getattr(result, "rows_written", data.num_rows))

    def stream_arrow(
        self, sql: str, params: Params, settings: QuerySettings, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        with self._connection(settings) as c:
            try:
                result = c.conn.send_query(sql, "Arrow", params=_chdb_params(params))
                reader = result.record_batch(rows_per_batch=batch_rows)
                try:
                    yield from reader
                finally:
                    result.close()
            except RuntimeError as exc:
                raise _wrap_error(exc) from None

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with suppress(Exception):  # closing is best effort at shutdown
                conn.conn.close()


# --------------------------------------------------------------------------------------------
# ClickHouse server over HTTP (clickhouse-connect)
# --------------------------------------------------------------------------------------------
class HttpBackend:
    """A ClickHouse server. Credentials embedded in the URL win over CLICKHOUSE_USER/PASSWORD,
    so CLICKHOUSE_EXPORT_URL=http://export_user:pw@host:8123 routes exports to their own user."""

    def __init__(self, url: str, *, user: str, password: str, database: str, timeout_s: float) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        self.target = f"{parts.scheme}://{parts.hostname}:{parts.port or 8123}"
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                secure=parts.scheme == "https",
                username=parts.username or user,
                password=parts.password or password,
                database=(parts.path.strip("/") or database),
                send_receive_timeout=timeout_s,
                connect_timeout=5,
                # Sessions would serialize our threads on the server; every query stands alone.
                autogenerate_session_id=False,
            )
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot reach it"
            reason = one_line_reason(exc)
            raise DependencyUnavailable("ClickHouse", self.target, reason) from None

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ClickHouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - clickhouse-connect raises several unrelated types
            raise _wrap_error(exc) from None

    def query_arrow(self, sql: str, params: Params, settings: QuerySettings) -> pa.Table:
        return self._call(lambda: self._client.query_arrow(sql, parameters=_params(params), settings=dict(settings)))

    def command(self, sql: str, params: Params, settings: QuerySettings) -> None:
        self._call(lambda: self._client.command(sql, parameters=_params(params), settings=dict(settings)))

    def insert_arrow(self, table: str, data: pa.Table, settings: QuerySettings) -> int:
        summary = self._call(lambda: self._client.insert_arrow(table, data, settings=dict(settings)))
        # ClickHouse's count of rows it wrote (X-ClickHouse-Summary); 0 when a proxy dropped the header.
        return int(summary.written_rows)

    def stream_arrow(
        self, sql: str, params: Params, settings: QuerySettings, batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        try:
            with self._client.query_arrow_stream(sql, parameters=_params(params), settings=dict(settings)) as stream:
                for item in stream:
                    if isinstance(item, pa.Table):
                        yield from item.to_batches(max_chunksize=batch_rows)
                    else:
                        yield item
        except ClickHouseError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _wrap_error(exc) from None

    def close(self) -> None:
        self._client.close()


# --------------------------------------------------------------------------------------------
# The interface the rest of tracehouse uses
# --------------------------------------------------------------------------------------------
_STREAM_END = object()


# Each class's blocking calls run on threads of its own, so a burst of slow background calls never
# leaves an interactive query waiting for a thread (asyncio's default pool has cores + 4: 6 on 2
# cores, fewer than the ClickHouse calls a busy web process has in flight). Threads start lazily.
THREADS_PER_CLASS = {Workload.INTERACTIVE: 32, Workload.INGESTION: 16, Workload.EXPORT: 8}


class ClickHouse:
    """Async ClickHouse access by workload class. Build it with `ClickHouse.from_settings`."""

    def __init__(
        self,
        backends: Mapping[Workload, Backend],
        classes: Mapping[Workload, WorkloadSettings],
        threads: Mapping[Workload, ThreadPoolExecutor] | None = None,
    ) -> None:
        self._backends = dict(backends)
        self._classes = dict(classes)
        self._owns_threads = threads is None
        self._threads = dict(threads or {}) or {
            w: ThreadPoolExecutor(n, thread_name_prefix=f"clickhouse-{w.value}") for w, n in THREADS_PER_CLASS.items()
        }

    async def _in_thread(self, workload: Workload, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads[workload], fn)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClickHouse:
        classes = workload_settings(settings)
        if settings.clickhouse_url is None:
            settings.chdb_path.mkdir(parents=True, exist_ok=True)
            shared = ChdbBackend(str(settings.chdb_path))
            return cls({w: shared for w in Workload}, classes)

        def http(url: str, workload: Workload) -> HttpBackend:
            return HttpBackend(
                url,
                user=settings.clickhouse_user,
                password=settings.clickhouse_password,
                database=settings.clickhouse_db,
                timeout_s=classes[workload].timeout_ms / 1000 + 5,
            )

        main_url = settings.clickhouse_url
        backends: dict[Workload, Backend] = {
            Workload.INTERACTIVE: http(main_url, Workload.INTERACTIVE),
            Workload.INGESTION: http(settings.clickhouse_ingestion_url or main_url, Workload.INGESTION),
            Workload.EXPORT: http(settings.clickhouse_export_url or main_url, Workload.EXPORT),
        }
        return cls(backends, classes)

    def with_class_settings(self, workload: Workload, **changes: Any) -> ClickHouse:
        """The same connections with one workload class's settings changed (tuning, tests, benchmarks).
        Shares the backends: close only the original."""
        classes = dict(self._classes)
        classes[workload] = dataclasses.replace(classes[workload], **changes)
        return ClickHouse(self._backends, classes, self._threads)

    @property
    def target(self) -> str:
        return self._backends[Workload.INTERACTIVE].target

    def settings_for(self, workload: Workload, extra: QuerySettings | None = None) -> dict[str, Any]:
        merged = self._classes[workload].query_settings()
        if extra:
            merged.update(extra)
        return merged

    def backend(self, workload: Workload) -> Backend:
        return self._backends[workload]

    # --- async API (for code on the event loop) -----------------------------------------------
    async def query(
        self, sql: str, params: Params = None, *, workload: Workload, settings: QuerySettings | None = None
    ) -> list[dict[str, Any]]:
        backend, merged = self._backends[workload], self.settings_for(workload, settings)
        # Rows become Python objects in the thread too: thousands of them would hold the loop.
        return await self._in_thread(workload, lambda: backend.query_arrow(sql, params, merged).to_pylist())

    async def query_arrow(
        self, sql: str, params: Params = None, *, workload: Workload, settings: QuerySettings | None = None
    ) -> pa.Table:
        backend, merged = self._backends[workload], self.settings_for(workload, settings)
        return await self._in_thread(workload, lambda: backend.query_arrow(sql, params, merged))

    async def command(
        self, sql: str, params: Params = None, *, workload: Workload, settings: QuerySettings | None = None
    ) -> None:
        backend, merged = self._backends[workload], self.settings_for(workload, settings)
        await self._in_thread(workload, lambda: backend.command(sql, params, merged))

    async def insert_arrow(
        self, table: str, data: pa.Table, *, workload: Workload, settings: QuerySettings | None = None
    ) -> int:
        backend, merged = self._backends[workload], self.settings_for(workload, settings)
        return await self._in_thread(workload, lambda: backend.insert_arrow(table, data, merged))

    async def stream_arrow(
        self,
        sql: str,
        params: Params = None,
        *,
        workload: Workload,
        settings: QuerySettings | None = None,
        batch_rows: int = 65_536,
        max_buffered: int = 2,
    ) -> AsyncIterator[pa.RecordBatch]:
        """Yield record batches produced in a thread; at most `max_buffered` wait in memory."""
        loop = asyncio.get_running_loop()
        handoff: asyncio.Queue[Any] = asyncio.Queue(max_buffered)
        stop = threading.Event()

        def produce() -> None:
            try:
                for batch in self.stream_blocking(
                    sql, params, workload=workload, settings=settings, batch_rows=batch_rows
                ):
                    if stop.is_set():
                        return
                    asyncio.run_coroutine_threadsafe(handoff.put(batch), loop).result()
                asyncio.run_coroutine_threadsafe(handoff.put(_STREAM_END), loop).result()
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer to re-raise
                if not stop.is_set():
                    asyncio.run_coroutine_threadsafe(handoff.put(exc), loop).result()

        producer = asyncio.create_task(self._in_thread(workload, produce))
        try:
            while True:
                item = await handoff.get()
                if item is _STREAM_END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not handoff.empty():  # unblock a producer waiting on a full queue
                handoff.get_nowait()
            await producer

    # --- blocking API (for code already running in a worker thread, e.g. a Parquet writer) ----
    def stream_blocking(
        self,
        sql: str,
        params: Params = None,
        *,
        workload: Workload,
        settings: QuerySettings | None = None,
        batch_rows: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        backend, merged = self._backends[workload], self.settings_for(workload, settings)
        return backend.stream_arrow(sql, params, merged, batch_rows)

    async def ping(self) -> None:
        try:
            await self.query("SELECT 1 AS ok", workload=Workload.INTERACTIVE)
        except DependencyUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            reason = one_line_reason(exc)
            raise DependencyUnavailable("ClickHouse", self.target, reason) from None

    def close(self) -> None:
        for backend in {id(b): b for b in self._backends.values()}.values():
            backend.close()
        if self._owns_threads:
            for executor in self._threads.values():
                executor.shutdown(wait=False, cancel_futures=True)
