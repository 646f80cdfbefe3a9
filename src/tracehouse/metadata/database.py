"""Connection handling and migrations for the metadata database.

SQLite (embedded, the default) and PostgreSQL (production) go through the same code. Everything
here is synchronous; async callers wrap calls in ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from tracehouse.errors import DependencyUnavailable

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"

# How long a SQLite writer waits for another writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# How long a PostgreSQL connection attempt may take, unless the URL says otherwise.
POSTGRES_CONNECT_TIMEOUT_S = 10
# Any constant works; it only has to be the same in every tracehouse process.
_MIGRATION_LOCK_KEY = 0x7472_6163_6568_6F75 & 0x7FFF_FFFF_FFFF_FFFF  # "tracehou"


def mask_url(url: str | URL) -> str:
    """The URL with any password replaced by ``***``, safe for logs and error messages."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class MetadataDB:
    """The metadata database: an engine, sessions, migrations and a health check."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self._url = make_url(url)
        self.display_url = mask_url(self._url)
        backend = self._url.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if backend == "sqlite":
            database = self._url.database
            in_memory = database in (None, "", ":memory:") or self._url.query.get("mode") == "memory"
            if in_memory:
                # One shared connection, otherwise every thread would see its own empty database.
                kwargs["poolclass"] = sa.pool.StaticPool
                kwargs["connect_args"] = {"check_same_thread": False}
            elif database is not None and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        elif backend == "postgresql":
            kwargs["pool_pre_ping"] = True
            if "connect_timeout" not in self._url.query:
                kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
        self.engine: sa.Engine = sa.create_engine(self._url, **kwargs)
        if backend == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_on_connect)
        self._sessions = sessionmaker(bind=self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MetadataDB({self.display_url!r})"

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    # --- sessions ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block succeeds and rolls back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- migrations ----------------------------------------------------------------------------
    def _alembic_config(self) -> Config:
        config = Config()
        config.set_main_option("script_location", str(ALEMBIC_DIR))
        # Percent signs would be read as interpolation by ConfigParser.
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return config

    def migrate(self) -> list[str]:
        """Upgrade to the newest revision; return the revisions applied by this call.

        Safe to run from several processes at once: the whole upgrade is one transaction held
        under a lock (an advisory lock on PostgreSQL, a write lock on SQLite), so later callers
        wait and then find nothing left to do.
        """
        applied: list[str] = []

        def record(*, step: Any, **_: Any) -> None:
            if step.is_upgrade and step.up_revision_id is not None:
                applied.append(str(step.up_revision_id))

        config = self._alembic_config()
        config.attributes["on_version_apply"] = record
        sqlite = self.dialect == "sqlite"
        with self.engine.connect() as conn:
            if sqlite:
                # Table rebuilds in batch migrations drop tables; with foreign keys enforced that
                # would cascade into child rows. The pragma is ignored inside a transaction, so it
                # goes first, and it is switched back on before the connection returns to the pool.
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                # pysqlite does not open transactions for DDL on its own; take the write lock now so
                # the migration is atomic and concurrent migrators queue up behind it.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows violating foreign keys: {broken[:5]}")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                if sqlite:
                    conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    conn.commit()
        return applied

    def current_revision(self) -> str | None:
        """The revision the database is at, or None before the first migration."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        """The newest revision shipped with this code."""
        return ScriptDirectory.from_config(self._alembic_config()).get_current_head()

    # --- health --------------------------------------------------------------------------------
    def ping(self) -> None:
        """Run ``SELECT 1``; raise DependencyUnavailable with a one-line reason on failure."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1")).scalar_one()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise DependencyUnavailable("metadata database", self.display_url, self._reason(exc)) from exc

    def _reason(self, exc: BaseException) -> str:
        cause: BaseException = exc
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            cause = exc.orig
        text = str(cause) or type(cause).__name__
        password = self._url.password
        if password:
            text = text.replace(str(password), "***")
        return _one_line(text)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _sqlite_use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_use_wal(cursor: Any) -> None:
    """Switch the file to WAL (a persistent setting, so normally only its first connection does).

    The switch needs an exclusive lock and SQLite reports "database is locked" at once instead of
    waiting when another connection is busy, as when several processes open a new file together;
    so retry for as long as the busy timeout would have waited.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)
