"""Versioned, idempotent ClickHouse migrations.

Each `migrations/NNNN_name.sql` file runs once; applied versions are recorded in
`tracehouse_schema_migrations`. Statements use `IF NOT EXISTS`, so a migration interrupted after
its DDL but before its record is safe to run again. `${ON_CLUSTER}` and `${RMT}` expand to the
clustered forms when CLICKHOUSE_CLUSTER_ENABLED is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from tracehouse.clickhouse.client import ClickHouse
from tracehouse.clickhouse.workload import Workload

LEDGER = "tracehouse_schema_migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: list[str]


def _render(sql: str, cluster: str | None) -> str:
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    engine = "ReplicatedReplacingMergeTree" if cluster else "ReplacingMergeTree"
    return sql.replace("${ON_CLUSTER}", on_cluster).replace("${RMT}", engine)


def _split(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def load_migrations(cluster: str | None = None) -> list[Migration]:
    folder = resources.files("tracehouse.clickhouse") / "migrations"
    found = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        version, _, rest = entry.name.partition("_")
        found.append(Migration(int(version), rest.removesuffix(".sql"), _split(_render(entry.read_text(), cluster))))
    return sorted(found, key=lambda m: m.version)


async def applied_versions(ch: ClickHouse) -> set[int]:
    rows = await ch.query(f"SELECT version FROM {LEDGER}", workload=Workload.INGESTION)
    return {int(r["version"]) for r in rows}


async def migrate_clickhouse(ch: ClickHouse, *, cluster: str | None = None) -> list[str]:
    """Apply pending migrations in order; return the names applied (empty when up to date)."""
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    engine = "ReplicatedMergeTree" if cluster else "MergeTree"
    await ch.command(
        f"CREATE TABLE IF NOT EXISTS {LEDGER} {on_cluster} "
        f"(version UInt32, name String, applied_at DateTime64(3) DEFAULT now64(3)) "
        f"ENGINE = {engine} ORDER BY version",
        workload=Workload.INGESTION,
    )
    done = await applied_versions(ch)
    applied = []
    for migration in load_migrations(cluster):
        if migration.version in done:
            continue
        for statement in migration.statements:
            await ch.command(statement, workload=Workload.INGESTION)
        await ch.command(
            f"INSERT INTO {LEDGER} (version, name) VALUES ({{v:UInt32}}, {{n:String}})",
            {"v": migration.version, "n": migration.name},
            workload=Workload.INGESTION,
        )
        applied.append(f"{migration.version:04d}_{migration.name}")
    return applied
