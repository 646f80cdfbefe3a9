"""The table catalog states what the migrations create, and the writer and export derive from it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa

from tracehouse.clickhouse import ClickHouse, Kind, Workload, catalog
from tracehouse.clickhouse.catalog import arrow_type, value_domain
from tracehouse.export.tables import TABLES as EXPORT_TABLES
from tracehouse.ingestion.writer import SCHEMAS, SORT_KEYS, VERSION_COLUMNS


def _column_differences(table: catalog.Table, found: list[tuple[str, str]]) -> list[str]:
    expected = [(c.name, c.ch_type) for c in table.columns]
    problems = []
    for position, (want, have) in enumerate(zip(expected, found, strict=False), start=1):
        if want != have:
            problems.append(
                f"{table.name} column {position}: catalog {want[0]} {want[1]}, ClickHouse {have[0]} {have[1]}"
            )
    problems += [f"{table.name}: catalog has {n} {t}, ClickHouse does not" for n, t in expected[len(found) :]]
    problems += [f"{table.name}: ClickHouse has {n} {t}, catalog does not" for n, t in found[len(expected) :]]
    return problems


async def test_catalog_columns_are_what_the_migrations_create(clickhouse: ClickHouse) -> None:
    rows = await clickhouse.query(
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
        "AND table IN {tables:Array(String)} ORDER BY table, position",
        {"tables": list(catalog.TABLES)},
        workload=Workload.INTERACTIVE,
    )
    problems = []
    for table in catalog.TABLES.values():
        found = [(r["name"], r["type"]) for r in rows if r["table"] == table.name]
        problems += _column_differences(table, found) if found else [f"{table.name}: no such table in ClickHouse"]
    assert not problems, "catalog and migrations disagree:\n" + "\n".join(problems)


def _engine_versions(engine_full: str) -> tuple[str | None, str | None]:
    """(version column, is-deleted column) from `ReplacingMergeTree(event_ts, is_deleted) ORDER BY ...`."""
    match = re.match(r"\w*ReplacingMergeTree\(([^)]*)\)", engine_full)
    assert match, f"not a ReplacingMergeTree: {engine_full}"
    # Replicated engines put their quoted ZooKeeper path and replica name first.
    names = [a.strip() for a in match.group(1).split(",") if a.strip() and not a.strip().startswith("'")]
    version, is_deleted = (names + [None, None])[:2]
    return version, is_deleted


async def test_catalog_keys_and_versions_are_what_the_migrations_create(clickhouse: ClickHouse) -> None:
    rows = await clickhouse.query(
        "SELECT name, sorting_key, engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name IN {tables:Array(String)}",
        {"tables": list(catalog.TABLES)},
        workload=Workload.INTERACTIVE,
    )
    found = {r["name"]: r for r in rows}
    problems = []
    for table in catalog.TABLES.values():
        if table.name not in found:
            problems.append(f"{table.name}: no such table in ClickHouse")
            continue
        sorting_key = ", ".join(table.sorting_key)
        if found[table.name]["sorting_key"] != sorting_key:
            problems.append(
                f"{table.name}: catalog sorts by {sorting_key}, ClickHouse by {found[table.name]['sorting_key']}"
            )
        versions = (table.version_column, table.is_deleted_column)
        if _engine_versions(found[table.name]["engine_full"]) != versions:
            problems.append(f"{table.name}: catalog versions {versions}, engine {found[table.name]['engine_full']}")
    assert not problems, "catalog and migrations disagree:\n" + "\n".join(problems)


def test_writer_schemas_are_derived_from_the_catalog() -> None:
    for name, schema in SCHEMAS.items():
        table = catalog.table(name)
        for arrow_field in schema:
            assert arrow_field.type == arrow_type(table.column(arrow_field.name).ch_type), (name, arrow_field.name)
            assert arrow_field.nullable, (name, arrow_field.name)  # as pa.schema made them before the catalog
    observations = SCHEMAS["observations"]
    assert observations.field("start_time").type == pa.timestamp("ms", tz="UTC")
    assert observations.field("total_cost").type == pa.decimal128(18, 12)
    assert observations.field("usage_details").type == pa.map_(pa.string(), pa.uint64())
    assert observations.field("cost_details").type == pa.map_(pa.string(), pa.decimal128(18, 12))
    assert observations.field("prompt_version").type == pa.uint16()
    assert SCHEMAS["traces"].field("tags").type == pa.list_(pa.string())
    assert SCHEMAS["traces"].field("is_deleted").type == pa.uint8()
    # Columns the writer leaves to their ClickHouse defaults are not in its schema.
    assert "prompt_id" not in observations.names
    assert "blob_storage_file_log" not in SCHEMAS


def test_writer_verifies_by_the_catalog_sort_keys() -> None:
    for name, key in SORT_KEYS.items():
        assert tuple(expression for expression, _, _ in key) == catalog.table(name).sorting_key
        assert VERSION_COLUMNS[name] == catalog.table(name).version_column
    assert [kind for _, kind, _ in SORT_KEYS["observations"]] == ["String", "String", "Date", "String"]
    row = {"project_id": "p", "type": "SPAN", "start_time": datetime(2024, 5, 1, 23, 30, tzinfo=UTC), "id": "o"}
    assert tuple(compute(row) for _, _, compute in SORT_KEYS["observations"]) == ("p", "SPAN", "2024-05-01", "o")


def test_export_tables_are_derived_from_the_catalog() -> None:
    for name, exported in EXPORT_TABLES.items():
        table = catalog.table(name)
        assert set(exported.columns) <= set(table.column_names)
        assert exported.columns[-2:] == (table.version_column, table.is_deleted_column)
        assert ("project_id", *exported.read_order) == table.sorting_key
        assert exported.version_column == table.version_column
    assert EXPORT_TABLES["observations"].read_order == ("type", "toDate(start_time)", "id")


def test_value_domains() -> None:
    prompt_version = catalog.table("observations").column("prompt_version").domain
    assert (prompt_version.kind, prompt_version.nullable) == (Kind.INT, True)
    assert (prompt_version.minimum, prompt_version.maximum) == (0, 65535)
    assert (value_domain("UInt8").minimum, value_domain("UInt8").maximum) == (0, 255)
    assert (value_domain("Int64").minimum, value_domain("Int64").maximum) == (-(2**63), 2**63 - 1)

    usage = catalog.table("observations").column("usage_details").domain
    assert usage.kind is Kind.MAP and usage.key == value_domain("String") and usage.element is not None
    assert (usage.element.kind, usage.element.minimum, usage.element.maximum) == (Kind.INT, 0, 2**64 - 1)

    cost = catalog.table("observations").column("cost_details").domain.element
    assert cost is not None and cost.kind is Kind.DECIMAL and cost.scale == 12
    assert (cost.minimum, cost.maximum) == (Decimal("-999999.999999999999"), Decimal("999999.999999999999"))

    timestamp = catalog.table("traces").column("timestamp").domain
    assert (timestamp.kind, timestamp.nullable, timestamp.scale) == (Kind.DATETIME, False, 3)
    assert timestamp.minimum == datetime(1900, 1, 1, tzinfo=UTC)
    assert timestamp.maximum == datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert catalog.table("observations").column("end_time").domain.nullable

    assert value_domain("LowCardinality(String)") == value_domain("String")
    tags = catalog.table("traces").column("tags").domain
    assert tags.kind is Kind.ARRAY and tags.element == value_domain("String")
