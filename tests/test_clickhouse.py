import asyncio
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from tracehouse.clickhouse import ClickHouse, ClickHouseError, ClickHouseErrorKind, Workload, migrate_clickhouse
from tracehouse.clickhouse.client import HttpBackend
from tracehouse.clickhouse.migrations import LEDGER, load_migrations
from tracehouse.errors import DependencyUnavailable
from tracehouse.settings import load_settings

SETTINGS_SQL = (
    "SELECT toUInt64(getSetting('max_threads')) AS max_threads, toInt64(getSetting('priority')) AS priority, "
    "toUInt64(getSetting('max_memory_usage')) AS max_memory_usage, "
    "toFloat64(getSetting('max_execution_time')) AS max_execution_time, "
    "toInt64(getSetting('os_thread_priority')) AS os_thread_priority"
)


async def test_each_workload_class_reaches_the_engine_with_its_settings(clickhouse):
    seen = {w: (await clickhouse.query(SETTINGS_SQL, workload=w))[0] for w in Workload}
    assert seen[Workload.EXPORT] == {
        "max_threads": 10,
        "priority": 5,
        "max_memory_usage": 20_000_000_000,
        "max_execution_time": 600,
        "os_thread_priority": 19,
    }
    # ClickHouse's priority: 1 is the highest (0 would mean "priorities not used").
    assert seen[Workload.INTERACTIVE]["priority"] == 1 and seen[Workload.INTERACTIVE]["os_thread_priority"] == 0
    assert (seen[Workload.INGESTION]["priority"], seen[Workload.INGESTION]["os_thread_priority"]) == (3, 10)
    assert seen[Workload.INTERACTIVE]["max_execution_time"] == 30
    assert seen[Workload.INTERACTIVE]["max_memory_usage"] == 4_000_000_000
    assert seen[Workload.INGESTION]["max_execution_time"] == 60


async def test_export_settings_come_from_the_fork_variables(monkeypatch, settings):
    monkeypatch.setenv("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_THREADS", "1")
    monkeypatch.setenv("LANGFUSE_CLICKHOUSE_DATA_EXPORT_PRIORITY", "7")
    monkeypatch.setenv("LANGFUSE_CLICKHOUSE_DATA_EXPORT_MAX_MEMORY_USAGE", "123456789")
    custom = load_settings(data_dir=settings.data_dir)
    ch = ClickHouse.from_settings(custom)  # a second client on the same chDB directory
    try:
        row = (await ch.query(SETTINGS_SQL, workload=Workload.EXPORT))[0]
    finally:
        ch.close()
    assert (row["max_threads"], row["priority"], row["max_memory_usage"]) == (1, 7, 123456789)


async def test_tiny_memory_limit_fails_with_memory_kind_and_connection_survives(clickhouse):
    heavy = "SELECT number % 1000000 AS k, count() FROM numbers(5000000) GROUP BY k FORMAT Null"
    with pytest.raises(ClickHouseError) as info:
        await clickhouse.command(heavy, workload=Workload.EXPORT, settings={"max_memory_usage": 1_000_000})
    assert info.value.kind is ClickHouseErrorKind.MEMORY_LIMIT
    assert "241" in str(info.value)
    # The override applied to that call only: the same class works again at its own limit.
    row = (await clickhouse.query(SETTINGS_SQL, workload=Workload.EXPORT))[0]
    assert row["max_memory_usage"] == 20_000_000_000
    await clickhouse.command(heavy, workload=Workload.EXPORT)


async def test_timeout_fails_with_timeout_kind(clickhouse):
    slow = "SELECT sum(cityHash64(number)) FROM numbers(100000000000)"
    started = time.monotonic()
    with pytest.raises(ClickHouseError) as info:
        await clickhouse.query(slow, workload=Workload.INTERACTIVE, settings={"max_execution_time": 1})
    assert info.value.kind is ClickHouseErrorKind.TIMEOUT
    assert time.monotonic() - started < 20


async def test_queries_do_not_block_the_event_loop(clickhouse):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await clickhouse.query(
        "SELECT sleepEachRow(0.1) FROM numbers(5) SETTINGS max_block_size = 1", workload=Workload.INTERACTIVE
    )
    elapsed = time.monotonic() - started
    task.cancel()
    # A blocked loop would tick ~0 times while the query ran; a free one ticks about every 10 ms.
    assert elapsed >= 0.45
    assert ticks >= elapsed / 0.01 * 0.3


def _trace_rows(project: str, ids: list[str], name: str, event_ms: int) -> pa.Table:
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    n = len(ids)
    return pa.table(
        {
            "id": ids,
            "project_id": [project] * n,
            "timestamp": pa.array([now] * n, pa.timestamp("ms", tz="UTC")),
            "name": [name] * n,
            "metadata": pa.array([[("k", "v")]] * n, pa.map_(pa.string(), pa.string())),
            "tags": pa.array([["a", "b"]] * n, pa.list_(pa.string())),
            "event_ts": pa.array([event_ms] * n, pa.timestamp("ms")),
            "is_deleted": pa.array([0] * n, pa.uint8()),
        }
    )


async def test_insert_arrow_and_read_latest_version(clickhouse):
    project = "p-insert"
    await clickhouse.insert_arrow(
        "traces", _trace_rows(project, ["t1", "t2"], "old", 1000), workload=Workload.INGESTION
    )
    await clickhouse.insert_arrow("traces", _trace_rows(project, ["t1"], "new", 2000), workload=Workload.INGESTION)
    rows = await clickhouse.query(
        "SELECT id, name, metadata, tags FROM traces FINAL WHERE project_id = {p:String} ORDER BY id",
        {"p": project},
        workload=Workload.INTERACTIVE,
    )
    assert [(r["id"], r["name"]) for r in rows] == [("t1", "new"), ("t2", "old")]
    assert rows[0]["metadata"] == [("k", "v")] and rows[0]["tags"] == ["a", "b"]


async def test_background_calls_never_hold_the_threads_of_interactive_queries(clickhouse):
    """Each workload class has threads of its own: with every ingestion thread busy in a slow query
    (and more waiting), an interactive query still starts at once."""
    from tracehouse.clickhouse.client import THREADS_PER_CLASS

    busy = THREADS_PER_CLASS[Workload.INGESTION] + 4
    background = [
        asyncio.create_task(clickhouse.query("SELECT sleep(2) AS s", workload=Workload.INGESTION)) for _ in range(busy)
    ]
    try:
        await asyncio.sleep(0.3)  # the slow queries hold their threads now
        started = time.perf_counter()
        assert await clickhouse.query("SELECT 1 AS ok", workload=Workload.INTERACTIVE) == [{"ok": 1}]
        waited = time.perf_counter() - started
    finally:
        await asyncio.gather(*background)
    assert waited < 1.0, f"the interactive query waited {waited:.1f} s for a thread behind background work"


async def test_stream_arrow_yields_bounded_batches_and_stops_early(clickhouse):
    sizes = [
        b.num_rows
        async for b in clickhouse.stream_arrow(
            "SELECT number, toString(number) AS s FROM numbers(250000)", workload=Workload.EXPORT, batch_rows=50_000
        )
    ]
    assert sum(sizes) == 250_000
    assert max(sizes) <= 65_536 and len(sizes) >= 4
    async for _batch in clickhouse.stream_arrow(
        "SELECT number FROM numbers(10000000)", workload=Workload.EXPORT, batch_rows=1000
    ):
        break  # leaving early must release the connection, not hang
    assert (await clickhouse.query("SELECT 1 AS one", workload=Workload.EXPORT)) == [{"one": 1}]


async def test_stream_arrow_raises_engine_errors(clickhouse):
    with pytest.raises(ClickHouseError) as info:
        async for _ in clickhouse.stream_arrow(
            "SELECT number % 1000000 AS k, count() FROM numbers(5000000) GROUP BY k",
            workload=Workload.EXPORT,
            settings={"max_memory_usage": 1_000_000},
        ):
            pass
    assert info.value.kind is ClickHouseErrorKind.MEMORY_LIMIT


async def test_migrations_are_idempotent_and_match_langfuse_schema(clickhouse):
    columns_sql = (
        "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    )
    before = await clickhouse.query(columns_sql, workload=Workload.INTERACTIVE)
    assert await migrate_clickhouse(clickhouse) == []
    after = await clickhouse.query(columns_sql, workload=Workload.INTERACTIVE)
    assert before == after
    versions = await clickhouse.query(f"SELECT version FROM {LEDGER} ORDER BY version", workload=Workload.INTERACTIVE)
    assert [v["version"] for v in versions] == [m.version for m in load_migrations()]
    types = {(c["table"], c["name"]): c["type"] for c in after}
    assert types[("traces", "metadata")] == "Map(LowCardinality(String), String)"
    assert types[("traces", "event_ts")] == "DateTime64(3)"
    assert types[("observations", "cost_details")] == "Map(LowCardinality(String), Decimal(18, 12))"
    assert types[("observations", "provided_usage_details")] == "Map(LowCardinality(String), UInt64)"
    assert types[("scores", "long_string_value")] == "String"
    assert ("blob_storage_file_log", "bucket_path") in types
    engines = await clickhouse.query(
        "SELECT name, engine, sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('traces', 'observations', 'scores', 'blob_storage_file_log') ORDER BY name",
        workload=Workload.INTERACTIVE,
    )
    assert {e["engine"] for e in engines} == {"ReplacingMergeTree"}
    keys = {e["name"]: e["sorting_key"] for e in engines}
    assert keys["observations"] == "project_id, type, toDate(start_time), id"


def test_cluster_mode_renders_on_cluster_and_replicated_engines():
    plain = " ".join(s for m in load_migrations() for s in m.statements)
    clustered = " ".join(s for m in load_migrations("main") for s in m.statements)
    assert "ON CLUSTER" not in plain and "Replicated" not in plain
    assert clustered.count("ON CLUSTER main") == sum(len(m.statements) for m in load_migrations())  # every DDL
    assert clustered.count("ReplicatedReplacingMergeTree(event_ts, is_deleted)") == 4


def test_unreachable_http_server_is_one_line_naming_clickhouse():
    with pytest.raises(DependencyUnavailable) as info:
        HttpBackend("http://127.0.0.1:1", user="default", password="", database="default", timeout_s=2)
    assert str(info.value).startswith("cannot reach ClickHouse at http://127.0.0.1:1")
    assert "\n" not in str(info.value)


async def test_awkward_strings_round_trip_as_parameters(clickhouse):
    # Tabs, newlines, backslashes, quotes and NULs must bind exactly (an id must match itself).
    awkward = ["a\\b", "tab\there", "new\nline", "quote'\"", "nul\0x", "emoji 🏨", "\\t literal"]
    for value in awkward:
        rows = await clickhouse.query(
            "SELECT {v:String} AS v, length({v:String}) AS n", {"v": value}, workload=Workload.INTERACTIVE
        )
        assert rows == [{"v": value, "n": len(value.encode())}]
    rows = await clickhouse.query(
        "SELECT arrayJoin({vs:Array(String)}) AS v", {"vs": awkward}, workload=Workload.INTERACTIVE
    )
    assert [r["v"] for r in rows] == awkward
