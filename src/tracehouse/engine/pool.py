"""chDB connections for concurrent requests, with no session state leaking between them.

chDB runs queries on separate connections to the same path in parallel with the GIL released, while
one connection serializes; so each running query holds a connection of its own. A ClickHouse HTTP
request without a session starts from the user's profile and nothing else, but a chDB connection
keeps whatever was SET on it. So each connection tracks the settings and database it has, a request
changes only the differences (unset ones go back to DEFAULT), and a connection whose session the
request itself changed (SET, USE, temporary tables) is closed instead of reused. Some state cannot
be undone: `readonly` cannot be set back once raised, and after a query with `os_thread_priority`
chDB leaves a thread at that nice value (observed with chDB 4.4: a later query with 0 does not reset
it). So connections are pooled per (readonly, os_thread_priority): a connection that ran background
work at nice 19 never serves an interactive query.

All methods block; the HTTP layer calls them from its worker threads.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from tracehouse.engine import errors
from tracehouse.engine.errors import EngineError, from_chdb

_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PoolKey = tuple[int, str]  # (readonly level, os_thread_priority)


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Connection:
    """One chDB connection and the session state the engine put on it."""

    def __init__(self, handle: Any, key: PoolKey) -> None:
        self.handle = handle  # chdb's Connection; `raw` is its native object (streaming calls)
        self.raw = handle._conn
        self.key = key
        self.applied: dict[str, str] = {}
        self.database = "default"
        self.reusable = True

    def prepare(self, settings: Mapping[str, str], database: str) -> None:
        """Make the session hold exactly `settings` (plus the pool's readonly) and `database`."""
        for name in settings:
            if not _SETTING_NAME.match(name):
                raise EngineError(errors.UNKNOWN_SETTING, f"Unknown setting '{name}'")
        changes = [f"{name} = DEFAULT" for name in self.applied if name not in settings]
        changes += [f"{name} = {quote_string(v)}" for name, v in settings.items() if self.applied.get(name) != v]
        if changes:
            self._run("SET " + ", ".join(changes))
            self.applied = dict(settings)
        if database != self.database:
            self._run(f"USE {quote_identifier(database)}")
            self.database = database

    def _run(self, sql: str) -> None:
        try:
            self.raw.query(sql, "TabSeparated")
        except RuntimeError as exc:
            self.reusable = False  # a SET may have applied part of its list: the state is unknown
            raise from_chdb(exc) from None

    def close(self) -> None:
        with suppress(Exception):  # closing is best effort; chDB logs its own failures
            self.handle.close()


class ChdbPool:
    def __init__(self, connect_string: str) -> None:
        import chdb  # a 500 MB engine: loaded only by the process that serves it

        self._chdb = chdb
        self._connect_string = connect_string
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self._closed = False
        self._control = self._new((0, "0"))  # KILL QUERY and the engine's own look-ups
        self._control_lock = threading.Lock()

    def _new(self, key: PoolKey) -> Connection:
        try:
            conn = Connection(self._chdb.connect(self._connect_string), key)
        except RuntimeError as exc:
            raise from_chdb(exc) from None
        if key[0]:
            conn.raw.query(f"SET readonly = {key[0]}", "TabSeparated")
        with self._lock:
            self._open.add(conn)
        return conn

    def acquire(self, key: PoolKey) -> Connection:
        with self._lock:
            if self._closed:
                raise EngineError(errors.ABORTED, "The engine is shutting down")
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        return self._new(key)

    def release(self, conn: Connection) -> None:
        with self._lock:
            if conn.reusable and not self._closed:
                self._idle.setdefault(conn.key, []).append(conn)
                return
            self._open.discard(conn)
        conn.close()

    def control(self, sql: str, fmt: str = "TabSeparated") -> bytes:
        """Run one statement on the control connection (never a user's query)."""
        with self._control_lock:
            try:
                return bytes(self._control.raw.query(sql, fmt).bytes())
            except RuntimeError as exc:
                raise from_chdb(exc) from None

    def kill(self, tag: str) -> None:
        """Cancel the running query whose log_comment is `tag` (chDB has no per-call query id)."""
        self.control(f"KILL QUERY WHERE Settings['log_comment'] = {quote_string(tag)} ASYNC FORMAT Null")

    def kill_all(self, marker: str) -> None:
        self.control(
            f"KILL QUERY WHERE position(Settings['log_comment'], {quote_string(marker)}) > 0 ASYNC FORMAT Null"
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._open = list(self._open), set()
            self._idle = {}
        for conn in conns:
            conn.close()
