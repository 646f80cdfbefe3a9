"""Projects and their API keys.

Every function takes the database explicitly: either a `MetadataDB` (the call runs in its own
transaction and commits) or an open `Session` (the call joins the caller's transaction and only
flushes). Results are frozen dataclasses, so they stay usable after the session is gone.

Keys follow Langfuse: ``pk-lf-<uuid4>`` / ``sk-lf-<uuid4>``, and secrets are stored only as
Langfuse's fast hash ``sha256(secret + sha256(SALT).hexdigest())``, so a Langfuse database's
hashes and keys carry over as long as SALT is the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tracehouse.metadata.database import MetadataDB
from tracehouse.metadata.models import ApiKey, Project, utcnow

PUBLIC_KEY_PREFIX = "pk-lf-"
SECRET_KEY_PREFIX = "sk-lf-"
DEFAULT_PROJECT_NAME = "default"

DB = MetadataDB | Session


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: str
    name: str
    created_at: datetime
    retention_days: int | None = None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly created key pair. The only place the secret is ever handed out."""

    id: str
    project_id: str
    public_key: str
    secret_key: str
    display_secret_key: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"CreatedKey(id={self.id!r}, project_id={self.project_id!r}, "
            f"public_key={self.public_key!r}, secret_key={self.display_secret_key!r})"
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    project_id: str
    public_key: str
    display_secret_key: str
    note: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


# --- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _scope(db: DB) -> Iterator[Session]:
    if isinstance(db, Session):
        yield db
        db.flush()
    else:
        with db.session() as session:
            yield session


def _new_id() -> str:
    return uuid.uuid4().hex


def generate_key_pair() -> tuple[str, str]:
    """A new (public, secret) pair in Langfuse's format."""
    return f"{PUBLIC_KEY_PREFIX}{uuid.uuid4()}", f"{SECRET_KEY_PREFIX}{uuid.uuid4()}"


def hash_secret_key(secret_key: str, salt: str) -> str:
    """Langfuse's fast hash of a secret key (hex sha256 of the secret followed by sha256(salt))."""
    salt_digest = hashlib.sha256(salt.encode("utf-8")).hexdigest()
    return hashlib.sha256((secret_key + salt_digest).encode("utf-8")).hexdigest()


def display_secret_key(secret_key: str) -> str:
    """What may be shown of a secret later: its prefix and last four characters."""
    return f"{SECRET_KEY_PREFIX}...{secret_key[-4:]}"


def _check_key(value: str, prefix: str, what: str) -> None:
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) <= len(prefix):
        raise ValueError(f"{what} must start with {prefix!r} followed by the key, got {_preview(value)!r}")
    if value != value.strip() or any(ch.isspace() for ch in value):
        raise ValueError(f"{what} must not contain whitespace")


def _preview(value: object) -> str:
    text = str(value)
    return text if len(text) <= 10 else text[:6] + "..."


def _project_info(row: Project) -> ProjectInfo:
    return ProjectInfo(id=row.id, name=row.name, created_at=row.created_at, retention_days=row.retention_days)


def _key_info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=row.id,
        project_id=row.project_id,
        public_key=row.public_key,
        display_secret_key=row.display_secret_key,
        note=row.note,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


# --- projects ---------------------------------------------------------------------------------


def _insert_project(session: Session, name: str, project_id: str | None) -> Project:
    name = name.strip() if isinstance(name, str) else name
    if not name:
        raise ValueError("project name must not be empty")
    if project_id is not None:
        if not isinstance(project_id, str) or not project_id.strip() or project_id != project_id.strip():
            raise ValueError(f"project id must be a non-empty string without surrounding spaces: {project_id!r}")
        if session.get(Project, project_id) is not None:
            raise ValueError(f"project {project_id!r} already exists")
    now = utcnow()
    row = Project(id=project_id or _new_id(), name=name, created_at=now, updated_at=now)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise ValueError(f"project {row.id!r} already exists") from exc
    return row


def create_project(db: DB, name: str, project_id: str | None = None) -> ProjectInfo:
    """Create a project; the id is generated unless given. Raises ValueError if the id is taken."""
    with _scope(db) as session:
        return _project_info(_insert_project(session, name, project_id))


def list_projects(db: DB) -> list[ProjectInfo]:
    """All projects, oldest first."""
    with _scope(db) as session:
        rows = session.scalars(sa.select(Project).order_by(Project.created_at, Project.id)).all()
        return [_project_info(row) for row in rows]


def get_project(db: DB, project_id: str) -> ProjectInfo | None:
    with _scope(db) as session:
        row = session.get(Project, project_id)
        return _project_info(row) if row is not None else None


# --- API keys ---------------------------------------------------------------------------------


def _insert_api_key(
    session: Session,
    project_id: str,
    *,
    salt: str,
    public_key: str | None,
    secret_key: str | None,
    note: str | None,
) -> CreatedKey:
    generated_public, generated_secret = generate_key_pair()
    public_key = generated_public if public_key is None else public_key
    secret_key = generated_secret if secret_key is None else secret_key
    _check_key(public_key, PUBLIC_KEY_PREFIX, "public key")
    _check_key(secret_key, SECRET_KEY_PREFIX, "secret key")
    if session.get(Project, project_id) is None:
        raise ValueError(f"project {project_id!r} does not exist")
    if session.scalar(sa.select(ApiKey.id).where(ApiKey.public_key == public_key)) is not None:
        raise ValueError(f"an API key with public key {public_key!r} already exists")
    hashed = hash_secret_key(secret_key, salt)
    if session.scalar(sa.select(ApiKey.id).where(ApiKey.hashed_secret_key == hashed)) is not None:
        raise ValueError("that secret key is already in use by another API key; choose a different one")
    row = ApiKey(
        id=_new_id(),
        project_id=project_id,
        public_key=public_key,
        hashed_secret_key=hashed,
        display_secret_key=display_secret_key(secret_key),
        note=note,
        created_at=utcnow(),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # lost a race with another writer
        raise ValueError(f"an API key with public key {public_key!r} already exists") from exc
    return CreatedKey(
        id=row.id,
        project_id=project_id,
        public_key=public_key,
        secret_key=secret_key,
        display_secret_key=row.display_secret_key,
    )


def create_api_key(
    db: DB,
    project_id: str,
    *,
    salt: str,
    public_key: str | None = None,
    secret_key: str | None = None,
    note: str | None = None,
) -> CreatedKey:
    """Create a key pair for a project (generated unless given) and return it with its secret.

    Raises ValueError for an unknown project, a malformed key, or a public key already in use.
    """
    with _scope(db) as session:
        return _insert_api_key(session, project_id, salt=salt, public_key=public_key, secret_key=secret_key, note=note)


def list_api_keys(db: DB, project_id: str | None = None) -> list[KeyInfo]:
    """Keys (revoked ones included), oldest first; all projects unless one is given."""
    with _scope(db) as session:
        query = sa.select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if project_id is not None:
            query = query.where(ApiKey.project_id == project_id)
        return [_key_info(row) for row in session.scalars(query).all()]


def revoke_api_key(db: DB, key_id_or_public_key: str) -> bool:
    """Revoke a key by id or public key. True if such a key exists (now revoked), else False.

    Revoking twice keeps the first revocation time.
    """
    with _scope(db) as session:
        row = session.scalar(
            sa.select(ApiKey).where(
                sa.or_(ApiKey.id == key_id_or_public_key, ApiKey.public_key == key_id_or_public_key)
            )
        )
        if row is None:
            return False
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return True


def verify_api_key(db: DB, public_key: str, secret_key: str, *, salt: str) -> str | None:
    """The project id for a valid, unrevoked key pair, else None. One indexed lookup."""
    if not public_key or not secret_key:
        return None
    with _scope(db) as session:
        row = session.execute(
            sa.select(ApiKey.project_id, ApiKey.hashed_secret_key, ApiKey.revoked_at).where(
                ApiKey.public_key == public_key
            )
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(hash_secret_key(secret_key, salt), row.hashed_secret_key):
        return None
    return str(row.project_id)


# --- first start ------------------------------------------------------------------------------


def ensure_init_project(
    db: DB,
    *,
    project_id: str,
    name: str,
    public_key: str,
    secret_key: str,
    salt: str,
) -> tuple[ProjectInfo, bool]:
    """Langfuse's headless initialisation (LANGFUSE_INIT_PROJECT_*): make sure the project and
    key pair exist. Returns (project, created) where created says whether anything was written.

    An existing project keeps its name. An existing public key is left as it is (revoked keys stay
    revoked); if it belongs to another project or has a different secret, ValueError is raised
    rather than overwriting it.
    """
    _check_key(public_key, PUBLIC_KEY_PREFIX, "LANGFUSE_INIT_PROJECT_PUBLIC_KEY")
    _check_key(secret_key, SECRET_KEY_PREFIX, "LANGFUSE_INIT_PROJECT_SECRET_KEY")
    created = False
    with _scope(db) as session:
        project = session.get(Project, project_id)
        if project is None:
            project = _insert_project(session, name, project_id)
            created = True
        existing = session.scalar(sa.select(ApiKey).where(ApiKey.public_key == public_key))
        if existing is None:
            _insert_api_key(session, project_id, salt=salt, public_key=public_key, secret_key=secret_key, note="init")
            created = True
        else:
            if existing.project_id != project_id:
                raise ValueError(
                    f"LANGFUSE_INIT_PROJECT_PUBLIC_KEY {public_key!r} already belongs to project "
                    f"{existing.project_id!r}, not {project_id!r}; not changing it"
                )
            if not hmac.compare_digest(hash_secret_key(secret_key, salt), existing.hashed_secret_key):
                raise ValueError(
                    f"API key {public_key!r} already exists with a different secret key than "
                    "LANGFUSE_INIT_PROJECT_SECRET_KEY (or SALT changed); not overwriting it"
                )
        return _project_info(project), created


def ensure_default_project(db: DB, *, salt: str) -> tuple[ProjectInfo, CreatedKey | None]:
    """On a database without projects, create project "default" with a fresh key pair and return
    the key (to show once). Otherwise return the oldest project and None.
    """
    with _scope(db) as session:
        first = session.scalars(sa.select(Project).order_by(Project.created_at, Project.id).limit(1)).first()
        if first is not None:
            return _project_info(first), None
        project = _insert_project(session, DEFAULT_PROJECT_NAME, None)
        key = _insert_api_key(
            session, project.id, salt=salt, public_key=None, secret_key=None, note="created on first start"
        )
        return _project_info(project), key
