"""Alembic environment for the metadata database.

`MetadataDB.migrate` runs this with an open connection in ``config.attributes["connection"]``,
already inside a transaction it will commit, so one script serves SQLite and PostgreSQL alike.
Logging is deliberately left alone: the application configures it.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

# Capabilities keep their tables next to their code; importing a table module registers its tables on
# Base.metadata, so migrations and the model/migration comparison see every table.
import tracehouse.batch_export.tables  # noqa: F401
import tracehouse.media.tables  # noqa: F401
import tracehouse.pricing.tables  # noqa: F401
from tracehouse.metadata.models import Base

config = context.config
target_metadata = Base.metadata


def _configure_options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        # MetadataDB.migrate listens here to learn which revisions it applied.
        "on_version_apply": config.attributes.get("on_version_apply"),
    }


def run_offline() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("offline migrations need sqlalchemy.url set on the Alembic config")
    dialect_name = sa.engine.make_url(url).get_backend_name()
    context.configure(
        url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **_configure_options(dialect_name)
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: sa.Connection) -> None:
    context.configure(connection=connection, **_configure_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    # Fallback for running the stock `alembic` command against a URL.
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("pass a connection in config.attributes['connection'] or set sqlalchemy.url")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            _run_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
