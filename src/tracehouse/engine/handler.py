"""ClickHouse's HTTP query handler, over chDB.

One request = one statement, as on a ClickHouse server without sessions: authenticate, read the
statement (the `query` parameter, a newline, then the body; an INSERT's inline data streams from
the body into chDB), combine the user's profile with the request's settings (policy.py), run it on
a connection of its own in a worker thread, and answer in ClickHouse's shape. Results of streamable
formats go out as chDB produces them (bounded memory; the first `buffer_size` bytes are held back so
an early error is still a proper error status), and a read-only query whose client goes away is
killed, as `cancel_http_readonly_queries_on_client_close` asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tracehouse.engine import errors, formats, policy
from tracehouse.engine.admission import Admission, is_background
from tracehouse.engine.codecs import choose_encoding
from tracehouse.engine.errors import EngineError, from_chdb
from tracehouse.engine.pool import ChdbPool, Connection
from tracehouse.engine.protocol import ClientGone, Receive, Request, Responder, Scope, Send
from tracehouse.engine.querylog import QueryLog, QueryLogEntry, json_lines
from tracehouse.engine.quotas import QuotaTracker
from tracehouse.engine.sqltext import STREAMED_KEYWORDS, Incomplete, Statement, analyze, setting_value, tokens
from tracehouse.engine.users import User, UsersConfig
from tracehouse.logging import get_logger

log = get_logger(__name__)
T = TypeVar("T")

# ClickHouse's HTTPHandler: parameters that are not settings (everything else but param_* is one).
RESERVED_PARAMS = frozenset(
    {
        "query",
        "compress",
        "decompress",
        "user",
        "password",
        "quota_key",
        "query_id",
        "stacktrace",
        "role",
        "buffer_size",
        "wait_end_of_query",
        "session_id",
        "session_timeout",
        "session_check",
        "client_protocol_version",
        "close_session",
        "database",
        "default_format",
    }
)
DEFAULT_BUFFER_SIZE = 1 << 20  # ClickHouse's DBMS_DEFAULT_BUFFER_SIZE: held back before the first byte
MAX_STATEMENT_BYTES = 16 << 20  # SQL text read into memory (chDB's max_query_size applies after)
MAX_INSERT_HEADER_BYTES = 1 << 20
INSERT_APPEND_BYTES = 1 << 20
FIRST_READ_BYTES = 64 << 10  # read in the first thread hop, with the query's start
TAG_KEY = "engine_query_id"
ADMIN_USER = "default"  # the operator's user (as in ClickHouse): reads every user's query log entries
_TRUE = ("1", "true", "True")


@dataclass
class EngineState:
    pool: ChdbPool
    users: UsersConfig
    query_log: QueryLog
    quotas: QuotaTracker
    executor: ThreadPoolExecutor  # one thread per running query
    control: ThreadPoolExecutor  # kills and look-ups, never starved by queries
    max_concurrent_queries: int
    error_names: dict[int, str]
    setting_defaults: dict[str, str]
    timezone: str
    display_name: str
    queue_wait_s: float = 10.0
    background_wait_s: float = 0.0  # see admission.py; 0 = background queries are not held back
    slots: asyncio.Semaphore = field(init=False)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_concurrent_queries)
        self.admission = Admission(self.background_wait_s)


@dataclass
class Plan:
    user: User
    query_id: str
    stmt: Statement
    sql: str
    bind: dict[str, str]
    settings: dict[str, str]  # the session settings the statement runs with (no readonly)
    readonly: int
    database: str
    output_format: str
    body: AsyncIterator[bytes]
    data_head: bytes
    wait_end_of_query: bool
    buffer_size: int
    encoding: str | None
    zlib_level: int
    client_settings: dict[str, str]
    query_settings: dict[str, str]  # SETTINGS clauses, after tightening

    @property
    def tag(self) -> str:
        return self.settings["log_comment"]


class EngineApp:
    """The ASGI application: health checks, the query log and the query handler."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.path in ("/ping", "/replicas_status") or (request.path == "/" and _is_bare_get(request)):
            await self._plain(request, send, 200, b"Ok.\n")
        elif request.path == "/engine/query_log":
            await self._query_log(request, send)
        elif request.path == "/":
            await self._query(request, send)
        else:
            text = f"There is no handle {request.path}\n\nUse / or /ping for health checks.\n"
            await self._plain(request, send, 404, text.encode())

    def _base_headers(self, query_id: str | None = None) -> list[tuple[str, str]]:
        headers = [
            ("x-clickhouse-server-display-name", self.state.display_name),
            ("x-clickhouse-timezone", self.state.timezone),
            ("keep-alive", "timeout=10"),
        ]
        if query_id:
            headers.append(("x-clickhouse-query-id", query_id))
        return headers

    async def _plain(self, request: Request, send: Send, status: int, body: bytes) -> None:
        responder = Responder(send, head=request.method == "HEAD", base_headers=self._base_headers())
        await responder.whole(status, [("content-type", "text/plain; charset=UTF-8")], body, encoding=None)

    async def _query_log(self, request: Request, send: Send) -> None:
        responder = Responder(send, head=request.method == "HEAD", base_headers=self._base_headers())
        try:
            user = self._authenticate(request)
        except EngineError as exc:
            await responder.error(exc, exc.http_status(self.state.error_names), close=False)
            return
        # `user` and `password` are credentials, as everywhere in ClickHouse's interface.
        keys = {"user_name": "user", "query_id": "query_id", "status": "status", "profile": "profile"}
        filters = {keys[k]: v for k, v in request.params.items() if k in keys}
        # Query texts carry other users' data: a user other than the operator's sees only its own.
        others = user.name != ADMIN_USER and filters.setdefault("user", user.name) != user.name
        rows = [] if others else self.state.query_log.select(filters, int(request.params.get("limit", "100")))
        await responder.whole(200, [("content-type", "application/x-ndjson")], json_lines(rows), encoding=None)

    def _authenticate(self, request: Request) -> User:
        name, password = request.credentials()
        return self.state.users.authenticate(name, password, request.client_ip)

    async def _query(self, request: Request, send: Send) -> None:
        query_id = request.params.get("query_id") or request.header("x-clickhouse-query-id") or str(uuid.uuid4())
        responder = Responder(send, head=request.method == "HEAD", base_headers=self._base_headers(query_id))
        entry: QueryLogEntry | None = None
        run: QueryRun | None = None
        started = time.monotonic()
        try:
            user = self._authenticate(request)
            plan = await _plan(self.state, request, user, query_id)
            entry = _log_entry(plan)
            self.state.quotas.start(user, kind=_quota_kind(plan.stmt))
            async with self.state.admission.admit(is_background(plan.settings)) as waited:
                entry.admission_wait_ms = round(waited * 1000, 1)
                async with _slot(self.state):
                    run = QueryRun(self.state, request, plan, responder, entry)
                    await run.run()
            entry.status = "cancelled" if entry.cancel_reason else "finished"
        except (EngineError, ClientGone) as exc:
            error = exc if isinstance(exc, EngineError) else _cancelled("the client closed the connection")
            await _answer_error(self.state, request, responder, error, entry, run)
        finally:
            if entry is not None:
                _close_entry(self.state, entry, started)


def _is_bare_get(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and "query" not in request.params


def _quota_kind(stmt: Statement) -> str:
    if stmt.keyword == "INSERT":
        return "insert"
    return "select" if stmt.read_only else "other"


def _cancelled(reason: str) -> EngineError:
    return EngineError(errors.QUERY_WAS_CANCELLED, f"Query was cancelled: {reason}")


async def _answer_error(
    state: EngineState,
    request: Request,
    responder: Responder,
    error: EngineError,
    entry: QueryLogEntry | None,
    run: QueryRun | None,
) -> None:
    if entry is not None:
        reason = run.cancel_reason if run is not None else ""
        entry.status = "cancelled" if reason or error.code == errors.QUERY_WAS_CANCELLED else "error"
        entry.cancel_reason = reason or entry.cancel_reason
        entry.exception_code, entry.exception = error.code, error.text
    if request.disconnected:
        return
    with contextlib.suppress(OSError):  # the client left while we answered
        await responder.error(error, error.http_status(state.error_names), close=not request.body_done)


def _log_entry(plan: Plan) -> QueryLogEntry:
    ran_with = {k: v for k, v in plan.settings.items() if k != "log_comment"}
    ran_with.update(plan.query_settings)
    ran_with["readonly"] = str(plan.readonly)
    return QueryLogEntry(
        query_id=plan.query_id,
        user=plan.user.name,
        profile=plan.user.profile.name,
        query=plan.sql[:4096],
        started_at=time.time(),
        settings=ran_with,
        client_settings=plan.client_settings,
    )


def _close_entry(state: EngineState, entry: QueryLogEntry, started: float) -> None:
    entry.duration_ms = round((time.monotonic() - started) * 1000, 3)
    state.query_log.add(entry)
    user = state.users.users.get(entry.user)
    if user is not None:
        state.quotas.finish(
            user,
            {
                "errors": 1.0 if entry.status == "error" else 0.0,
                "result_rows": entry.result_rows,
                "result_bytes": entry.result_bytes,
                "read_rows": entry.read_rows,
                "read_bytes": entry.read_bytes,
                "execution_time": entry.duration_ms / 1000,
            },
        )


class _slot:
    """A running-query slot; waits up to queue_wait_s, then ClickHouse's TOO_MANY_SIMULTANEOUS_QUERIES."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self.state.slots.acquire(), self.state.queue_wait_s)
        except TimeoutError:
            raise EngineError(
                errors.TOO_MANY_SIMULTANEOUS_QUERIES,
                f"Too many simultaneous queries. Maximum: {self.state.max_concurrent_queries}",
            ) from None

    async def __aexit__(self, *exc: object) -> None:
        self.state.slots.release()


# ------------------------------------------------------------------------------------------------
# planning: the statement and its settings
# ------------------------------------------------------------------------------------------------
async def _plan(state: EngineState, request: Request, user: User, query_id: str) -> Plan:
    params = request.params
    if params.get("session_id"):
        raise EngineError(
            errors.NOT_IMPLEMENTED,
            "HTTP sessions (session_id) are not supported by the tracehouse engine; every request stands alone",
        )
    if params.get("compress", "0") in _TRUE:
        raise EngineError(
            errors.NOT_IMPLEMENTED,
            "compress=1 (ClickHouse's internal block compression) is not supported by the tracehouse engine; "
            "use Accept-Encoding with enable_http_compression=1 instead",
        )
    form = await request.form_fields()
    if form is not None:  # the query and its parameters came as form fields; no inline data then
        params = {**params, **form}
    client = {k: v for k, v in params.items() if k not in RESERVED_PARAMS and not k.startswith("param_") and k}
    bind = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
    body = request.body_chunks() if form is None else _nothing()
    text, data_start, stmt = await _read_statement(request, params.get("query", ""), body)
    if stmt.denied:
        code = errors.INTO_OUTFILE_NOT_ALLOWED if "FILE" in stmt.denied.split()[1:2] else errors.ACCESS_DENIED
        raise EngineError(code, f"Not allowed: {stmt.denied}")
    profile = user.profile
    in_query = {a.name: setting_value(a.value) for a in stmt.assignments}
    policy.check_changes(profile, client, state.setting_defaults)
    policy.check_changes(profile, in_query, state.setting_defaults)
    settings = policy.merge(profile, client)
    readonly = _readonly(settings, request)
    sql_end = stmt.insert_end if stmt.insert_end is not None else data_start
    sql_text, query_settings = policy.tighten_assignments(text[:sql_end], stmt.assignments, profile)
    settings["log_comment"] = json.dumps({TAG_KEY: query_id, "user": user.name}, separators=(",", ":"))
    return Plan(
        user=user,
        query_id=query_id,
        stmt=stmt,
        sql=_utf8(sql_text),
        bind=bind,
        settings=settings,
        readonly=readonly,
        database=request.header("x-clickhouse-database")
        or params.get("database")
        or user.default_database
        or "default",
        output_format=stmt.output_format
        or request.header("x-clickhouse-format")
        or params.get("default_format")
        or "TabSeparated",
        body=body,
        data_head=text[data_start:].encode("latin-1") if stmt.data_start is not None else b"",
        wait_end_of_query=params.get("wait_end_of_query", settings.get("http_wait_end_of_query", "0")) in _TRUE,
        buffer_size=_buffer_size(params, settings),
        encoding=choose_encoding(request.header("accept-encoding"))
        if params.get("enable_http_compression", settings.get("enable_http_compression", "0")) in _TRUE
        else None,
        zlib_level=int(settings.get("http_zlib_compression_level", "3") or 3),
        client_settings=client,
        query_settings=query_settings,
    )


def _readonly(settings: dict[str, str], request: Request) -> int:
    """readonly is a property of the pooled connection (it cannot be unset); GET is readonly=2."""
    value = settings.pop("readonly", "0")
    try:
        level = int(value)
    except ValueError:
        raise EngineError(errors.BAD_ARGUMENTS, f"Invalid value for setting readonly: {value}") from None
    if level not in (0, 1, 2):
        raise EngineError(errors.BAD_ARGUMENTS, f"Invalid value for setting readonly: {value}")
    if level == 0 and request.method in ("GET", "HEAD"):
        return 2  # ClickHouse's setReadOnlyIfHTTPMethodIdempotent
    return level


def _buffer_size(params: dict[str, str], settings: dict[str, str]) -> int:
    raw = settings.get("http_response_buffer_size") or params.get("buffer_size") or "0"
    try:
        return max(int(raw), DEFAULT_BUFFER_SIZE)
    except ValueError:
        return DEFAULT_BUFFER_SIZE


def _utf8(latin1_text: str) -> str:
    try:
        return latin1_text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EngineError(errors.SYNTAX_ERROR, f"The query is not valid UTF-8: {exc}") from None


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _read_statement(request: Request, query_param: str, body: AsyncIterator[bytes]) -> tuple[str, int, Statement]:
    """The statement text (latin-1, offsets = bytes), where its SQL ends, and its analysis.

    The SQL is the `query` parameter, a newline and the body; an INSERT's inline data is left in
    `body` (only the bytes read while looking for it are part of the returned text)."""
    head = bytearray(query_param.encode() + b"\n" if query_param else b"")
    done = False
    while True:
        text = head.decode("latin-1")
        keyword = _first_keyword(text)
        if keyword == "INSERT" or done:
            try:
                stmt = analyze(text, final=done)
            except Incomplete:
                stmt = None
            if stmt is not None and (done or stmt.data_start is not None):
                return text, stmt.data_start if stmt.data_start is not None else len(text), stmt
        limit = MAX_INSERT_HEADER_BYTES if keyword == "INSERT" else MAX_STATEMENT_BYTES
        chunk = await anext(body, None)
        if chunk is None:
            done = True
            continue
        head += chunk
        if len(head) > limit:
            raise EngineError(errors.QUERY_IS_TOO_LARGE, f"Query is too large ({len(head)} bytes > {limit})")


def _first_keyword(text: str) -> str:
    try:
        for token in tokens(text, final=False):
            if token.text == "(":
                continue
            return token.upper or token.text
    except Incomplete:
        pass
    return ""


# ------------------------------------------------------------------------------------------------
# execution
# ------------------------------------------------------------------------------------------------
@dataclass
class _Stats:
    result_rows: int = 0
    result_bytes: int = 0
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, result: Any) -> None:
        self.result_rows += int(result.rows_read())
        self.result_bytes += int(result.bytes_read())
        self.read_rows += int(_maybe(result, "storage_rows_read"))
        self.read_bytes += int(_maybe(result, "storage_bytes_read"))
        self.written_rows += int(_maybe(result, "rows_written"))
        self.written_bytes += int(_maybe(result, "bytes_written"))

    def summary(self) -> str:
        values = {
            "read_rows": self.read_rows,
            "read_bytes": self.read_bytes,
            "written_rows": self.written_rows,
            "written_bytes": self.written_bytes,
            "total_rows_to_read": self.read_rows,
            "result_rows": self.result_rows,
            "result_bytes": self.result_bytes,
            "elapsed_ns": int((time.monotonic() - self.started) * 1e9),
        }
        return json.dumps({k: str(v) for k, v in values.items()}, separators=(",", ":"))


def _maybe(result: Any, name: str) -> int:
    method = getattr(result, name, None)
    return int(method()) if callable(method) else 0


@dataclass
class _Chunk:
    data: bytes
    last: bool


class QueryRun:
    """One statement on one chDB connection, from `prepare` to the last byte."""

    def __init__(
        self, state: EngineState, request: Request, plan: Plan, responder: Responder, entry: QueryLogEntry
    ) -> None:
        self.state = state
        self.request = request
        self.plan = plan
        self.responder = responder
        self.entry = entry
        self.stats = _Stats()
        self.cancel_reason = ""
        self._pending = tempfile.SpooledTemporaryFile(max_size=plan.buffer_size)  # noqa: SIM115 - closed in run()
        self._watcher: asyncio.Task[None] | None = None
        self.conn: Connection | None = None

    async def run(self) -> None:
        try:
            if self.plan.stmt.insert_format is not None:
                await self._insert(await self._call(self._open))
            elif self.plan.stmt.keyword in STREAMED_KEYWORDS and formats.streamable(self.plan.output_format):
                self._watch()
                await self._stream()
            else:
                self._watch()
                await self._whole()
        finally:
            if self._watcher is not None:
                self._watcher.cancel()
            self._pending.close()
            self._copy_stats()
            if self.conn is not None:
                await self._release(self.conn)

    def _open(self) -> Connection:
        """A connection of the request's pool, holding exactly the request's session (blocking)."""
        nice = self.plan.query_settings.get("os_thread_priority") or self.plan.settings.get("os_thread_priority", "0")
        self.conn = conn = self.state.pool.acquire((self.plan.readonly, nice))
        conn.prepare(self.plan.settings, self.plan.database)
        if self.plan.stmt.changes_session:
            conn.reusable = False  # its session now differs from what the engine tracks
        return conn

    async def _release(self, conn: Connection) -> None:
        if conn.reusable:
            self.state.pool.release(conn)  # a list append: no thread hop for the common case
        else:
            await self._call(self.state.pool.release, conn)  # closing a chDB connection takes a while

    def _copy_stats(self) -> None:
        for name in ("result_rows", "result_bytes", "read_rows", "read_bytes", "written_rows"):
            setattr(self.entry, name, getattr(self.stats, name))
        self.entry.cancel_reason = self.cancel_reason

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking chDB work in a query thread; if this task is cancelled (shutdown), the query is
        killed and the thread waited for, so a connection is never released while still in use."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.state.executor, lambda: fn(*args, **kwargs))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.cancel_reason = self.cancel_reason or "engine shutdown"
            await self._kill()
            await asyncio.wait([future])
            raise

    async def _kill(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.state.control, self.state.pool.kill, self.plan.tag)
        except EngineError as exc:
            log.warning("engine_kill_failed", query_id=self.plan.query_id, error=exc.text)

    def _watch(self) -> None:
        """Once the body is read: a read-only query is killed when its client goes away."""

        async def watch() -> None:
            await self.request.wait_disconnect()
            if self.plan.stmt.read_only and not self.responder.finished:
                self.cancel_reason = "client disconnected"
                await self._kill()

        self._watcher = asyncio.create_task(watch())

    # --- INSERT with inline data ------------------------------------------------------------
    async def _insert(self, conn: Connection) -> None:
        if self.plan.stmt.insert_format == "Values" and self.plan.bind:
            await self._insert_values_with_parameters(conn)
            return
        raw = conn.raw
        inserter = await self._call(_chdb_call, raw.send_insert, self.plan.sql, self.plan.stmt.insert_format)
        finished = False
        try:
            async for piece in _batched(self._insert_data(), INSERT_APPEND_BYTES):
                await self._call(_chdb_call, raw.insert_append, inserter, piece)
            result = await self._call(_chdb_call, raw.insert_done, inserter)
            finished = True
        except ClientGone:
            self.cancel_reason = "the client closed the connection before the data was complete"
            raise
        finally:
            if not finished:
                await self._call(_quietly, raw.insert_cancel, inserter)
        self.stats.written_rows = int(result.rows_written())
        self.stats.written_bytes = int(result.bytes_written())
        headers = [("x-clickhouse-summary", self.stats.summary()), ("content-type", "text/plain; charset=UTF-8")]
        await self.responder.whole(200, headers, b"", encoding=None)

    async def _insert_values_with_parameters(self, conn: Connection) -> None:
        """`VALUES ({v:UInt32})`: chDB's streaming insert takes no parameters, so the whole (small)
        statement runs as one query, as ClickHouse parses it."""
        data = bytearray()
        async for piece in self._insert_data():
            data += piece
            if len(data) > MAX_STATEMENT_BYTES:
                raise EngineError(errors.QUERY_IS_TOO_LARGE, "INSERT ... VALUES with parameters is too large")
        sql = self.plan.sql + " VALUES " + _utf8(bytes(data).decode("latin-1"))

        def run() -> None:
            self.stats.add(_chdb_call(conn.raw.query, sql, "TabSeparated", params=self.plan.bind))

        await self._call(run)
        headers = [("x-clickhouse-summary", self.stats.summary()), ("content-type", "text/plain; charset=UTF-8")]
        await self.responder.whole(200, headers, b"", encoding=None)

    async def _insert_data(self) -> AsyncIterator[bytes]:
        if self.plan.data_head:
            yield self.plan.data_head
        async for chunk in self.plan.body:
            yield chunk

    # --- a result built whole by chDB ---------------------------------------------------------
    async def _whole(self) -> None:
        def run() -> bytes:  # one thread hop: open, run, copy the result
            conn = self._open()
            result = _chdb_call(conn.raw.query, self.plan.sql, self.plan.output_format, params=self.plan.bind)
            self.stats.add(result)
            return bytes(result.bytes())

        body = await self._call(run)
        await self.responder.whole(200, self._result_headers(), body, encoding=self.plan.encoding)

    def _result_headers(self) -> list[tuple[str, str]]:
        headers = [("x-clickhouse-summary", self.stats.summary())]
        if self.plan.stmt.read_only or self.plan.stmt.output_format:
            headers.append(("x-clickhouse-format", self.plan.output_format))
            headers.append(("content-type", formats.content_type(self.plan.output_format)))
        else:
            headers.append(("content-type", "text/plain; charset=UTF-8"))
        return headers

    # --- a streamed result ----------------------------------------------------------------------
    async def _stream(self) -> None:
        stitcher = formats.Stitcher(self.plan.output_format)
        stream: Any = None

        def start() -> _Chunk:  # the first hop opens, starts and reads: a small result needs no other
            nonlocal stream
            conn = self._open()
            stream = _chdb_call(conn.raw.send_query, self.plan.sql, self.plan.output_format, params=self.plan.bind)
            return self._fetch(stream, stitcher, FIRST_READ_BYTES)

        chunk = _Chunk(b"", False)
        try:
            chunk = await self._call(start)
            await self._emit(chunk.data)
            while not chunk.last:
                if self.request.disconnected:
                    self.cancel_reason = self.cancel_reason or "client disconnected"
                    raise _cancelled(self.cancel_reason)
                chunk = await self._call(self._fetch, stream, stitcher, 1)
                await self._emit(chunk.data)
            await self._complete()
        finally:
            if not chunk.last and stream is not None and self.conn is not None:
                await self._call(_quietly, self.conn.raw.streaming_cancel_query, stream)

    def _fetch(self, stream: Any, stitcher: formats.Stitcher, min_bytes: int) -> _Chunk:
        """chDB's next chunks, stitched, until `min_bytes` are ready or the result ends (blocking)."""
        assert self.conn is not None
        data = bytearray()
        while len(data) < min_bytes:
            result = _chdb_call(self.conn.raw.streaming_fetch_result, stream)
            if result is None:
                return _Chunk(bytes(data + stitcher.finish()), True)
            self.stats.add(result)
            data += stitcher.feed(bytes(result.bytes()))
            if int(result.rows_read()) == 0:  # chDB's last chunk (it may still carry a header)
                return _Chunk(bytes(data + stitcher.finish()), True)
        return _Chunk(bytes(data), False)

    async def _emit(self, data: bytes) -> None:
        if not data:
            return
        if self.responder.started:
            await self.responder.write(data)
            return
        self._pending.write(data)
        if not self.plan.wait_end_of_query and self._pending.tell() >= self.plan.buffer_size:
            await self._commit()

    async def _commit(self) -> None:
        """Send the headers and whatever was held back."""
        headers = [*self._result_headers(), ("x-clickhouse-exception-tag", self.responder.exception_tag)]
        await self.responder.start(200, headers, encoding=self.plan.encoding, zlib_level=self.plan.zlib_level)
        self._pending.seek(0)
        while piece := self._pending.read(DEFAULT_BUFFER_SIZE):
            await self.responder.write(piece)
        self._pending.seek(0)
        self._pending.truncate()

    async def _complete(self) -> None:
        if not self.responder.started:
            await self._commit()
        await self.responder.end()


async def _batched(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Join small body pieces so each thread hop into chDB carries about `size` bytes."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) >= size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _chdb_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:
        raise from_chdb(exc) from None


def _quietly(fn: Callable[..., object], *args: Any) -> None:
    try:
        fn(*args)
    except RuntimeError as exc:  # cancelling what already ended or failed
        log.debug("engine_cancel_ignored", error=str(exc)[:200])
