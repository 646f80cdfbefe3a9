"""The metadata package on SQLite and, when TRACEHOUSE_TEST_DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tracehouse.errors import DependencyUnavailable
from tracehouse.metadata import (
    Base,
    MetadataDB,
    create_api_key,
    create_project,
    ensure_default_project,
    ensure_init_project,
    get_project,
    list_api_keys,
    list_projects,
    mask_url,
    revoke_api_key,
    verify_api_key,
)
from tracehouse.metadata import database as database_module

PG_ENV = "TRACEHOUSE_TEST_DATABASE_URL"
SALT = "test-salt"


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database of the requested kind, removed afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta' / 'metadata.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"set {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres) to run on PostgreSQL")
    name = f"tracehouse_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def fresh_db(db_url: str) -> Iterator[MetadataDB]:
    """An unmigrated database."""
    db = MetadataDB(db_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def db(fresh_db: MetadataDB) -> MetadataDB:
    """A database migrated to head."""
    fresh_db.migrate()
    return fresh_db


def schema_snapshot(engine: sa.Engine) -> dict[str, Any]:
    inspector = sa.inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        snapshot[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "fks": sorted(
                (f["name"] or "", tuple(f["constrained_columns"]), f["referred_table"])
                for f in inspector.get_foreign_keys(table)
            ),
        }
    return snapshot


def all_stored_values(db: MetadataDB) -> list[Any]:
    values: list[Any] = []
    with db.engine.connect() as conn:
        for table in sa.inspect(db.engine).get_table_names():
            for row in conn.execute(sa.text(f"SELECT * FROM {table}")):
                values.extend(row)
    return values


# --- migrations ---------------------------------------------------------------------------------


# Every shipped revision, in order; the last one is head.
REVISIONS = ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"]
HEAD = REVISIONS[-1]


def test_migrate_applies_initial_then_nothing(fresh_db: MetadataDB) -> None:
    assert fresh_db.current_revision() is None
    assert fresh_db.migrate() == REVISIONS
    assert fresh_db.current_revision() == HEAD == fresh_db.head_revision()

    before = schema_snapshot(fresh_db.engine)
    assert {"projects", "api_keys", "cron_jobs", "alembic_version"} <= set(before)
    assert [c[0] for c in before["cron_jobs"]["columns"]] == ["name", "last_run", "job_started_at", "state"]
    assert ("ix_api_keys_public_key", ("public_key",), True) in before["api_keys"]["indexes"]
    assert ("ix_api_keys_project_id", ("project_id",), False) in before["api_keys"]["indexes"]
    assert [fk[1:] for fk in before["api_keys"]["fks"]] == [(("project_id",), "projects")]

    assert fresh_db.migrate() == []
    assert fresh_db.current_revision() == HEAD
    assert schema_snapshot(fresh_db.engine) == before


def test_models_match_migration(db: MetadataDB) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_concurrent_migrations_apply_once(db_url: str) -> None:
    dbs = [MetadataDB(db_url) for _ in range(4)]
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(dbs))

    def run(target: MetadataDB) -> None:
        try:
            barrier.wait()
            results.append(target.migrate())
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert sorted(results) == [[], [], [], REVISIONS]
        assert dbs[0].current_revision() == HEAD
    finally:
        for d in dbs:
            d.dispose()


FAILING_EXTRA = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.add_column("projects", sa.Column("extra", sa.Integer))
    op.execute("SELECT * FROM table_that_does_not_exist")
"""

REBUILDING_EXTRA = """
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "HEAD_REVISION"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("projects", recreate="always") as batch:
        batch.add_column(sa.Column("extra", sa.Integer))
"""


def _scripts_with(tmp_path: Path, source: str) -> Path:
    """A copy of the shipped migrations plus one extra revision."""
    target = tmp_path / "alembic_copy"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(database_module.ALEMBIC_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "versions" / "9999_extra.py").write_text(source.replace("HEAD_REVISION", HEAD))
    return target


def test_failed_migration_leaves_no_trace(db: MetadataDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = create_project(db, "survivor")
    create_api_key(db, project.id, salt=SALT)
    before = schema_snapshot(db.engine)
    monkeypatch.setattr(database_module, "ALEMBIC_DIR", _scripts_with(tmp_path, FAILING_EXTRA))
    with pytest.raises(sa.exc.SQLAlchemyError):
        db.migrate()
    assert db.current_revision() == HEAD
    assert schema_snapshot(db.engine) == before
    assert [p.name for p in list_projects(db)] == ["survivor"]


def test_sqlite_table_rebuild_keeps_child_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batch migrations rebuild a table by dropping it; with foreign keys enforced SQLite would
    # cascade that drop into api_keys. migrate() must switch enforcement off while it runs.
    db = MetadataDB(f"sqlite:///{tmp_path / 'metadata.db'}")
    try:
        db.migrate()
        project = create_project(db, "parent")
        key = create_api_key(db, project.id, salt=SALT)
        monkeypatch.setattr(database_module, "ALEMBIC_DIR", _scripts_with(tmp_path, REBUILDING_EXTRA))
        assert db.migrate() == ["9999"]
        assert "extra" in [c["name"] for c in sa.inspect(db.engine).get_columns("projects")]
        assert verify_api_key(db, key.public_key, key.secret_key, salt=SALT) == project.id
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "does" / "not" / "exist" / "metadata.db"
    db = MetadataDB(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 1000
        db.migrate()
        # The migration switches foreign keys off for its own duration only.
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert path.is_file()
    finally:
        db.dispose()


# --- sessions -----------------------------------------------------------------------------------


def test_session_commits_or_rolls_back(db: MetadataDB) -> None:
    with pytest.raises(RuntimeError), db.session() as session:
        create_project(session, "rolled back")
        assert [p.name for p in list_projects(session)] == ["rolled back"]
        raise RuntimeError("boom")
    assert list_projects(db) == []

    with db.session() as session:
        kept = create_project(session, "kept")
        create_api_key(session, kept.id, salt=SALT)
    assert [p.name for p in list_projects(db)] == ["kept"]
    assert len(list_api_keys(db, kept.id)) == 1


def test_deleting_a_project_cascades_to_its_keys(db: MetadataDB) -> None:
    doomed = create_project(db, "doomed")
    other = create_project(db, "other")
    create_api_key(db, doomed.id, salt=SALT)
    create_api_key(db, other.id, salt=SALT)
    with db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM projects WHERE id = :id"), {"id": doomed.id})
    assert [k.project_id for k in list_api_keys(db)] == [other.id]


# --- projects -----------------------------------------------------------------------------------


def test_create_list_get_projects(db: MetadataDB) -> None:
    assert list_projects(db) == []
    first = create_project(db, "first")
    second = create_project(db, "  second  ", project_id="proj-2")
    assert second.id == "proj-2"
    assert second.name == "second"
    assert first.id and first.id != second.id
    assert first.created_at.tzinfo is not None
    assert first.created_at.utcoffset() == timedelta(0)

    listed = list_projects(db)
    assert [p.id for p in listed] == [first.id, second.id]
    assert get_project(db, "proj-2") == listed[1]
    assert listed[0].created_at == first.created_at
    assert get_project(db, "missing") is None

    with pytest.raises(ValueError, match="already exists"):
        create_project(db, "again", project_id="proj-2")
    with pytest.raises(ValueError, match="must not be empty"):
        create_project(db, "   ")
    assert len(list_projects(db)) == 2


def test_timestamps_round_trip_as_utc(db: MetadataDB) -> None:
    project = create_project(db, "tz")
    key = create_api_key(db, project.id, salt=SALT)
    assert revoke_api_key(db, key.public_key)
    (info,) = list_api_keys(db, project.id)
    for stamp in (info.created_at, info.revoked_at):
        assert stamp is not None
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
    assert info.revoked_at is not None and info.revoked_at >= info.created_at
    assert abs(info.created_at - project.created_at) < timedelta(minutes=1)
    assert info.created_at.astimezone(UTC) == info.created_at


# --- API keys -----------------------------------------------------------------------------------


def test_created_keys_look_like_langfuse_and_secret_is_not_stored(db: MetadataDB) -> None:
    project = create_project(db, "keys")
    key = create_api_key(db, project.id, salt=SALT, note="ci")

    assert key.project_id == project.id
    assert key.public_key.startswith("pk-lf-")
    assert key.secret_key.startswith("sk-lf-")
    assert str(uuid.UUID(key.public_key.removeprefix("pk-lf-"))) == key.public_key.removeprefix("pk-lf-")
    assert str(uuid.UUID(key.secret_key.removeprefix("sk-lf-"))) == key.secret_key.removeprefix("sk-lf-")
    assert key.display_secret_key == "sk-lf-..." + key.secret_key[-4:]
    assert key.secret_key not in repr(key)

    secret_body = key.secret_key.removeprefix("sk-lf-")
    stored = [str(v) for v in all_stored_values(db) if v is not None]
    assert key.public_key in stored  # the scan does see the row
    for value in stored:
        assert key.secret_key not in value
        assert secret_body not in value
        assert secret_body.replace("-", "") not in value

    # Langfuse's fast hash: sha256(secret + sha256(SALT).hexdigest()).
    expected = hashlib.sha256((key.secret_key + hashlib.sha256(SALT.encode()).hexdigest()).encode()).hexdigest()
    with db.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT hashed_secret_key, display_secret_key, note FROM api_keys WHERE public_key = :pk"),
            {"pk": key.public_key},
        ).one()
    assert row.hashed_secret_key == expected
    assert row.display_secret_key == key.display_secret_key
    assert row.note == "ci"

    (info,) = list_api_keys(db, project.id)
    assert (info.id, info.public_key, info.display_secret_key, info.note) == (
        key.id,
        key.public_key,
        key.display_secret_key,
        "ci",
    )
    assert info.revoked_at is None and info.last_used_at is None


def test_create_api_key_with_given_keys_and_errors(db: MetadataDB) -> None:
    project = create_project(db, "given")
    key = create_api_key(db, project.id, salt=SALT, public_key="pk-lf-given", secret_key="sk-lf-given-secret")
    assert (key.public_key, key.secret_key) == ("pk-lf-given", "sk-lf-given-secret")
    assert verify_api_key(db, "pk-lf-given", "sk-lf-given-secret", salt=SALT) == project.id

    with pytest.raises(ValueError, match="does not exist"):
        create_api_key(db, "no-such-project", salt=SALT)
    with pytest.raises(ValueError, match="already exists"):
        create_api_key(db, project.id, salt=SALT, public_key="pk-lf-given")
    with pytest.raises(ValueError, match="pk-lf-"):
        create_api_key(db, project.id, salt=SALT, public_key="pub-123")
    with pytest.raises(ValueError, match="sk-lf-"):
        create_api_key(db, project.id, salt=SALT, secret_key="pk-lf-oops")
    with pytest.raises(ValueError, match="pk-lf-"):
        create_api_key(db, project.id, salt=SALT, public_key="pk-lf-")
    assert [k.public_key for k in list_api_keys(db)] == ["pk-lf-given"]


def test_verify_and_revoke(db: MetadataDB) -> None:
    project = create_project(db, "verify")
    other = create_project(db, "other")
    key = create_api_key(db, project.id, salt=SALT)
    other_key = create_api_key(db, other.id, salt=SALT)

    assert verify_api_key(db, key.public_key, key.secret_key, salt=SALT) == project.id
    assert verify_api_key(db, other_key.public_key, other_key.secret_key, salt=SALT) == other.id
    assert verify_api_key(db, key.public_key, other_key.secret_key, salt=SALT) is None
    assert verify_api_key(db, key.public_key, key.secret_key + "x", salt=SALT) is None
    assert verify_api_key(db, key.public_key, key.secret_key, salt="another-salt") is None
    assert verify_api_key(db, "pk-lf-unknown", key.secret_key, salt=SALT) is None
    assert verify_api_key(db, key.public_key, "", salt=SALT) is None

    assert revoke_api_key(db, key.public_key) is True
    assert verify_api_key(db, key.public_key, key.secret_key, salt=SALT) is None
    first_revocation = {k.id: k.revoked_at for k in list_api_keys(db)}[key.id]
    assert first_revocation is not None
    assert revoke_api_key(db, key.id) is True  # by id; already revoked
    assert {k.id: k.revoked_at for k in list_api_keys(db)}[key.id] == first_revocation
    assert revoke_api_key(db, "pk-lf-unknown") is False

    # The other project's key is unaffected.
    assert verify_api_key(db, other_key.public_key, other_key.secret_key, salt=SALT) == other.id
    assert {k.id for k in list_api_keys(db, other.id)} == {other_key.id}


def test_verify_from_worker_threads(db: MetadataDB) -> None:
    project = create_project(db, "threads")
    key = create_api_key(db, project.id, salt=SALT)

    async def main() -> list[str | None]:
        calls = [
            asyncio.to_thread(verify_api_key, db, key.public_key, key.secret_key if i % 2 else "sk-lf-bad", salt=SALT)
            for i in range(16)
        ]
        return await asyncio.gather(*calls)

    results = asyncio.run(main())
    assert results == [None if i % 2 == 0 else project.id for i in range(16)]


# --- first start --------------------------------------------------------------------------------


def test_ensure_init_project_is_idempotent(db: MetadataDB) -> None:
    args = {
        "project_id": "init-project",
        "name": "Init",
        "public_key": "pk-lf-1234567890",
        "secret_key": "sk-lf-1234567890",
        "salt": SALT,
    }
    project, created = ensure_init_project(db, **args)
    assert created is True
    assert (project.id, project.name) == ("init-project", "Init")
    assert verify_api_key(db, "pk-lf-1234567890", "sk-lf-1234567890", salt=SALT) == "init-project"

    before = (list_projects(db), list_api_keys(db))
    again, created_again = ensure_init_project(db, **{**args, "name": "Renamed"})
    assert created_again is False
    assert again == project
    assert (list_projects(db), list_api_keys(db)) == before

    with pytest.raises(ValueError, match="different secret"):
        ensure_init_project(db, **{**args, "secret_key": "sk-lf-something-else"})
    with pytest.raises(ValueError, match="already belongs to project"):
        ensure_init_project(db, **{**args, "project_id": "another-project"})
    with pytest.raises(ValueError, match="pk-lf-"):
        ensure_init_project(db, **{**args, "public_key": "1234567890"})
    assert (list_projects(db), list_api_keys(db)) == before
    assert verify_api_key(db, "pk-lf-1234567890", "sk-lf-1234567890", salt=SALT) == "init-project"


def test_ensure_init_project_adds_key_to_existing_project(db: MetadataDB) -> None:
    create_project(db, "Existing", project_id="p1")
    project, created = ensure_init_project(
        db, project_id="p1", name="Ignored", public_key="pk-lf-a", secret_key="sk-lf-b", salt=SALT
    )
    assert created is True
    assert project.name == "Existing"
    assert verify_api_key(db, "pk-lf-a", "sk-lf-b", salt=SALT) == "p1"


def test_ensure_default_project_creates_once(db: MetadataDB) -> None:
    project, key = ensure_default_project(db, salt=SALT)
    assert project.name == "default"
    assert key is not None and key.project_id == project.id
    assert verify_api_key(db, key.public_key, key.secret_key, salt=SALT) == project.id

    again, no_key = ensure_default_project(db, salt=SALT)
    assert no_key is None
    assert again == project
    assert len(list_projects(db)) == 1
    assert len(list_api_keys(db)) == 1


def test_ensure_default_project_leaves_existing_projects_alone(db: MetadataDB) -> None:
    existing = create_project(db, "mine")
    project, key = ensure_default_project(db, salt=SALT)
    assert key is None
    assert project == existing
    assert list_api_keys(db) == []


# --- health -------------------------------------------------------------------------------------


def test_ping_reachable(db: MetadataDB) -> None:
    db.ping()
    db.dispose()  # ping opens a fresh connection after the pool is emptied
    db.ping()
    assert db.current_revision() == HEAD


def test_ping_unreachable_postgres_is_one_masked_line() -> None:
    db = MetadataDB("postgresql+psycopg://tracer:hunter2secret@127.0.0.1:1/metadata")
    try:
        with pytest.raises(DependencyUnavailable) as info:
            db.ping()
    finally:
        db.dispose()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert "metadata database" in message
    assert "hunter2secret" not in message
    assert "tracer:***@127.0.0.1:1/metadata" in message
    assert info.value.name == "metadata database"
    assert info.value.reason and "\n" not in info.value.reason


def test_mask_url_hides_only_the_password() -> None:
    masked = mask_url("postgresql+psycopg://user:p%40ss@db.example:5432/lf")
    assert masked == "postgresql+psycopg://user:***@db.example:5432/lf"
    assert mask_url("sqlite:////tmp/x/metadata.db") == "sqlite:////tmp/x/metadata.db"
    assert "secret" not in repr(MetadataDB("postgresql+psycopg://u:secret@127.0.0.1:1/x"))
