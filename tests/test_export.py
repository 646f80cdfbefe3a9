"""Scheduled export: windows, files, manifests, cursor, splitting, faults — against real parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from export_helpers import (
    BOX,
    DAY,
    HOUR,
    MINUTE,
    Clock,
    current_state,
    exported_rows,
    job,
    make_integration,
    manifests,
    reduce_latest,
    run_until_idle,
    write_rows,
)
from tracehouse.export import state
from tracehouse.export.destination import destination_store


@pytest.fixture(autouse=True)
def _no_secrets_left_behind(services: Any) -> Any:
    """Later test modules open the same metadata DB without this module's ENCRYPTION_KEY."""
    from tracehouse.export.integrations import delete_integration, list_integrations

    yield
    for row in list_integrations(services.metadata, None):
        if row.secret_access_key:
            delete_integration(services.metadata, row.project_id)


def store_of(services: Any, project_id: str):
    integration = state.load_integration(services.metadata, BOX, project_id)
    assert integration is not None
    return destination_store(integration, services.settings.data_dir)


async def test_full_history_exports_every_row_once_in_latest_version(services: Any, project: Any) -> None:
    project_id, _ = project
    base = datetime.now(UTC).replace(microsecond=0) - 3 * DAY
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": f"t{i}", "event_ts": base + i * 10 * MINUTE, "name": "v1"} for i in range(30)],
    )
    await write_rows(
        services.clickhouse,
        "observations",
        project_id,
        [{"id": f"o{i}", "event_ts": base + i * 7 * MINUTE} for i in range(40)],
    )
    make_integration(services.metadata, project_id)
    clock = Clock(datetime.now(UTC))
    results = await run_until_idle(job(services, clock), project_id)
    assert any(r.get("rows") for r in results)
    store = store_of(services, project_id)
    exported = await exported_rows(store, project_id)
    assert set(reduce_latest(exported["traces"])) == set(await current_state(services.clickhouse, "traces", project_id))
    assert len(exported["traces"]) == 30 and len(exported["observations"]) == 40


# --- windows and schedules (pure planning) ------------------------------------------------------
def test_plan_window_exports_whole_periods_once_each() -> None:
    from tracehouse.export.windows import plan_window

    lag = timedelta(minutes=5)
    cursor = datetime(2026, 1, 1, tzinfo=UTC)
    for frequency in (timedelta(minutes=15), HOUR, DAY):
        # Not yet a whole period behind the horizon: wait, and say exactly when to come back.
        waiting = plan_window(
            cursor,
            frequency=frequency,
            catchup=timedelta(minutes=15),
            horizon=cursor + frequency - timedelta(seconds=1),
            lag=lag,
        )
        assert waiting.window is None and waiting.next_run == cursor + frequency + lag
        # At that moment one whole period is exportable: one window of exactly one period.
        due = plan_window(
            cursor, frequency=frequency, catchup=timedelta(minutes=15), horizon=waiting.next_run - lag, lag=lag
        )
        assert due.window is not None and due.window.duration == frequency and not due.catching_up


def test_plan_window_catches_up_in_chunks_and_skips_empty_stretches() -> None:
    from tracehouse.export.windows import plan_window, skippable_until

    cursor = datetime(2026, 1, 1, tzinfo=UTC)
    behind = plan_window(cursor, frequency=DAY, catchup=timedelta(minutes=15), horizon=cursor + 3 * DAY, lag=MINUTE)
    assert behind.catching_up and behind.window is not None and behind.window.duration == timedelta(minutes=15)
    whole = plan_window(cursor, frequency=DAY, catchup=timedelta(0), horizon=cursor + 3 * DAY, lag=MINUTE)
    assert whole.window is not None and whole.window.duration == DAY
    # Data starts 10 days after the cursor: one step jumps the empty stretch, in whole chunks.
    chunk = timedelta(minutes=15)
    end = skippable_until(
        cursor, first_row=cursor + 10 * DAY + timedelta(minutes=7), horizon=cursor + 20 * DAY, chunk=chunk
    )
    assert end == cursor + 10 * DAY
    assert skippable_until(cursor, first_row=None, horizon=cursor + 2 * DAY, chunk=chunk) == cursor + 2 * DAY
    assert skippable_until(cursor, first_row=cursor + chunk, horizon=cursor + DAY, chunk=chunk) is None


def test_window_halves_and_names_are_exact() -> None:
    from tracehouse.export.windows import ExportWindow

    window = ExportWindow(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, 1000, tzinfo=UTC))
    first, second = window.halves()
    assert first.start == window.start and first.end == second.start and second.end == window.end
    assert first.stamp == "2026-01-01T00-00-00-000Z_2026-01-01T00-00-00-500Z"
    with pytest.raises(ValueError):
        ExportWindow(window.end, window.end)


# --- end to end: schedules, modes, catch-up ---------------------------------------------------------
def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@pytest.mark.parametrize(
    ("frequency", "period"), [("every_15_minutes", timedelta(minutes=15)), ("hourly", HOUR), ("daily", DAY)]
)
async def test_schedule_exports_each_period_exactly_once(
    services: Any, project: Any, frequency: str, period: timedelta
) -> None:
    """The scheduler ticks every few minutes of (simulated) time; each period is exported by exactly
    one run, right after it is complete, as one window of exactly one period."""
    from tracehouse.export.worker import enqueue_due

    project_id, _ = project
    t0 = _hour_floor(datetime.now(UTC)) - 6 * DAY
    make_integration(
        services.metadata,
        project_id,
        exportFrequency=frequency,
        exportMode="FROM_CUSTOM_DATE",
        exportStartDate=t0.isoformat(),
    )
    await write_rows(
        services.clickhouse, "traces", project_id, [{"id": f"t{i}", "event_ts": t0 + i * period / 3} for i in range(12)]
    )  # 4 periods
    clock = Clock(t0)
    export = job(services, clock)
    runs: list[dict[str, Any]] = []
    while clock.now < t0 + 4 * period + period / 2:
        clock.now += period / 6
        queued: list[str] = []

        async def enqueue(pid: str, job_id: str, queued: list[str] = queued) -> None:
            queued.append(pid)

        await enqueue_due(services.metadata, enqueue, clock.now)
        if project_id in queued:
            runs.append(await export.run(project_id, owner="sched"))
    windows = [r["window"] for r in runs if "window" in r]
    assert [(w["start"], w["end"]) for w in windows] == [
        (iso(t0 + k * period), iso(t0 + (k + 1) * period)) for k in range(4)
    ]
    # One probe when the integration was new (due at once, nothing whole yet), then one run per period.
    assert "waiting" in runs[0] and len(runs) == len(windows) + 1
    assert sum(r["rows"] for r in runs if "rows" in r) == 12
    row = state.load_integration(services.metadata, BOX, project_id)
    assert row is not None and row.next_sync_at == t0 + 5 * period + timedelta(seconds=5)


def iso(moment: datetime) -> str:
    from tracehouse.export.windows import iso_ms

    return iso_ms(moment)


async def test_catch_up_chunks_chain_and_skip_empty_stretches(services: Any, project: Any) -> None:
    from tracehouse.export.service import job_id
    from tracehouse.export.windows import file_time

    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - 5 * DAY
    # Data written in two bursts a day apart, nothing in between; both more than two periods ago.
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": f"a{i}", "event_ts": start + i * MINUTE} for i in range(40)]
        + [{"id": f"b{i}", "event_ts": start + DAY + i * MINUTE} for i in range(40)],
    )
    make_integration(services.metadata, project_id, exportFrequency="daily")
    enqueued: list[str] = []
    results = await run_until_idle(job(services, Clock(datetime.now(UTC)), enqueued=enqueued), project_id)
    windows = [r for r in results if "window" in r]
    # 40 minutes of data per burst = 3 chunks of 15 min each, plus the empty stretches as one window each.
    assert len(windows) < 12, windows
    chunked = [r for r in windows if r["rows"]]
    assert all(_dur(r) <= timedelta(minutes=15) for r in chunked)
    assert sum(r["rows"] for r in windows) == 80
    # Each catch-up step queued the next one under the id the scheduler would use for that cursor.
    catchup = [r for r in windows if r["mode"] == "catchup"]
    assert enqueued == [job_id(project_id, datetime.fromisoformat(r["window"]["end"])) for r in catchup]
    assert all(
        e.endswith(file_time(datetime.fromisoformat(r["window"]["end"])))
        for e, r in zip(enqueued, catchup, strict=True)
    )
    found = await manifests(store_of(services, project_id), project_id)
    spans = sorted((m["window"]["start"], m["window"]["end"]) for m in found)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), "manifests must cover time without gaps"
    assert any(m["files"] == [] and all(v == 0 for v in m["rows"].values()) for m in found)  # empty windows


def _dur(result: dict[str, Any]) -> timedelta:
    return datetime.fromisoformat(result["window"]["end"]) - datetime.fromisoformat(result["window"]["start"])


async def test_from_date_and_from_today_modes(services: Any, project: Any) -> None:
    from tracehouse.metadata import create_project

    project_id, _ = project
    now = datetime.now(UTC)
    cutoff = _hour_floor(now) - DAY
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": "before", "event_ts": cutoff - HOUR}, {"id": "after", "event_ts": cutoff + HOUR}],
    )
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=cutoff.isoformat())
    await run_until_idle(job(services, Clock(now)), project_id)
    exported = await exported_rows(store_of(services, project_id), project_id)
    assert [r["id"] for r in exported["traces"]] == ["after"]

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    other = create_project(services.metadata, "today", project_id=project_id + "-today").id
    await write_rows(
        services.clickhouse,
        "traces",
        other,
        [{"id": "yesterday", "event_ts": today - HOUR}, {"id": "today", "event_ts": today + MINUTE}],
    )
    view = make_integration(services.metadata, other, exportMode="FROM_TODAY")
    assert view["exportStartDate"] == today.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    later = Clock(max(now, today + HOUR))
    if later.now > now:  # just after midnight: the rows of today are not behind the horizon yet
        pytest.skip("too close to midnight UTC for a from-today export")
    await run_until_idle(job(services, later), other)
    exported = await exported_rows(store_of(services, other), other)
    assert [r["id"] for r in exported["traces"]] == ["today"]


async def test_trace_only_project_exports_traces_only(services: Any, project: Any) -> None:
    from export_helpers import config

    project_id, _ = project
    t = datetime.now(UTC) - DAY
    await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": t}])
    await write_rows(services.clickhouse, "observations", project_id, [{"id": "o1", "event_ts": t}])
    await write_rows(services.clickhouse, "scores", project_id, [{"id": "s1", "event_ts": t}])
    make_integration(services.metadata, project_id)
    cfg = config(services.settings.data_dir, trace_only_projects=frozenset({project_id}))
    await run_until_idle(job(services, Clock(datetime.now(UTC)), cfg=cfg), project_id)
    found = await manifests(store_of(services, project_id), project_id)
    assert {tuple(m["tables"]) for m in found} == {("traces",)}
    exported = await exported_rows(store_of(services, project_id), project_id)
    assert set(exported) == {"traces"} and [r["id"] for r in exported["traces"]] == ["t1"]


# --- files, formats and destinations -------------------------------------------------------------------
def s3_integration(moto_endpoint: str, bucket: str, **fields: Any) -> dict[str, Any]:
    from conftest import ACCESS_KEY, REGION, SECRET_KEY

    return {
        "type": "S3_COMPATIBLE",
        "bucketName": bucket,
        "endpoint": moto_endpoint,
        "region": REGION,
        "accessKeyId": ACCESS_KEY,
        "secretAccessKey": SECRET_KEY,
        "forcePathStyle": True,
        "prefix": "exports/",
        **fields,
    }


@pytest.mark.parametrize(
    ("file_type", "compressed", "destination"),
    [("PARQUET", True, "s3"), ("JSONL", True, "s3"), ("CSV", False, "local"), ("JSONL", False, "local")],
)
async def test_file_types_read_back(
    services: Any, project: Any, file_type: str, compressed: bool, destination: str, request: pytest.FixtureRequest
) -> None:
    project_id, _ = project
    t = datetime.now(UTC).replace(microsecond=0) - DAY
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [
            {"id": f"t{i}", "event_ts": t + i * MINUTE, "name": f"trace {i}", "input": '{"q": "hi, \\"x\\""}'}
            for i in range(5)
        ],
    )
    await write_rows(
        services.clickhouse,
        "observations",
        project_id,
        [{"id": "o1", "event_ts": t, "name": "gen", "type": "GENERATION"}],
    )
    await write_rows(services.clickhouse, "scores", project_id, [{"id": "s1", "event_ts": t, "value": 0.5}])
    fields: dict[str, Any] = {"fileType": file_type, "compressed": compressed}
    if destination == "s3":
        fields |= s3_integration(request.getfixturevalue("moto_endpoint"), request.getfixturevalue("bucket"))
    make_integration(services.metadata, project_id, **fields)
    await run_until_idle(job(services, Clock(datetime.now(UTC))), project_id)
    store = store_of(services, project_id)
    found = await manifests(store, project_id)
    keys = [f["key"] for m in found for f in m["files"]]
    ext = {"PARQUET": ".parquet", "JSONL": ".jsonl", "CSV": ".csv"}[file_type] + (
        ".gz" if compressed and file_type != "PARQUET" else ""
    )
    assert keys and all(k.endswith(ext) for k in keys)
    if destination == "s3":
        assert all(k.startswith(f"exports/{project_id}/") for k in keys)
    exported = await exported_rows(store, project_id)
    traces = sorted(exported["traces"], key=lambda r: r["id"])
    assert [(r["id"], r["name"]) for r in traces] == [(f"t{i}", f"trace {i}") for i in range(5)]
    assert traces[0]["input"] == '{"q": "hi, \\"x\\""}'
    assert exported["observations"][0]["type"] == "GENERATION"
    assert float(exported["scores"][0]["value"]) == 0.5
    assert all(int(r["is_deleted"]) == 0 for r in traces)


async def test_empty_window_writes_a_manifest_and_no_file(services: Any, project: Any) -> None:
    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - 3 * HOUR
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=start.isoformat())
    result = await job(services, Clock(start + HOUR + MINUTE)).run(project_id, owner="j")
    assert result["rows"] == 0 and result["files"] == 0
    store = store_of(services, project_id)
    [manifest] = await manifests(store, project_id)
    assert manifest["files"] == [] and manifest["rows"] == {"scores": 0, "traces": 0, "observations": 0}
    assert manifest["window"] == {"start": iso(start), "end": iso(start + HOUR)}
    assert [i.key for i in await store.list(project_id)] == [
        f"{project_id}/manifests/{manifest_stamp(start, start + HOUR)}.json"
    ]


def manifest_stamp(start: datetime, end: datetime) -> str:
    from tracehouse.export.windows import ExportWindow

    return ExportWindow(start, end).stamp


async def test_rows_updated_deleted_or_arriving_late_reach_a_later_window(services: Any, project: Any) -> None:
    project_id, _ = project
    t0 = _hour_floor(datetime.now(UTC)) - 2 * DAY
    first_ts = t0 + 10 * MINUTE
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [{"id": i, "event_ts": first_ts, "timestamp": first_ts, "name": "v1"} for i in ("a", "b", "c")],
    )
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=t0.isoformat())
    clock = Clock(t0 + 2 * HOUR)
    export = job(services, clock)
    await run_until_idle(export, project_id)
    # After that export: "a" is updated, "b" deleted, and "d" arrives late (an old trace timestamp,
    # written now). All three are new versions, so they belong to a later window.
    later = t0 + 3 * HOUR
    await write_rows(
        services.clickhouse,
        "traces",
        project_id,
        [
            {"id": "a", "event_ts": later, "timestamp": first_ts, "name": "v2"},
            {"id": "b", "event_ts": later, "timestamp": first_ts, "name": "v1", "is_deleted": 1},
            {"id": "d", "event_ts": later + MINUTE, "timestamp": t0 - 30 * DAY, "name": "late"},
        ],
    )
    clock.now = t0 + 6 * HOUR
    await run_until_idle(export, project_id)
    store = store_of(services, project_id)
    exported = await exported_rows(store, project_id)
    latest = reduce_latest(exported["traces"])
    assert {i: r["name"] for i, r in latest.items()} == {"a": "v2", "c": "v1", "d": "late"}
    assert set(latest) == set(await current_state(services.clickhouse, "traces", project_id))
    # Every version went out exactly once (5 rows = 3 first versions + 3 new ones - none repeated).
    versions = [(r["id"], str(r["event_ts"])) for r in exported["traces"]]
    assert len(versions) == len(set(versions)) == 6


# --- self-healing: splitting and faults -------------------------------------------------------------
async def _bulky_observations(
    services: Any, project_id: str, start: datetime, count: int = 8000, span: timedelta = HOUR
) -> None:
    import os

    step = span / count
    for chunk in range(0, count, 2000):
        await write_rows(
            services.clickhouse,
            "observations",
            project_id,
            [
                {"id": f"o{i}", "event_ts": start + i * step, "input": os.urandom(500).hex()}
                for i in range(chunk, min(count, chunk + 2000))
            ],
        )


async def test_memory_limit_errors_split_the_window_until_it_fits(services: Any, project: Any) -> None:
    from tracehouse.clickhouse import Workload
    from tracehouse.export.verify import verify_export

    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await _bulky_observations(services, project_id, start)
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=start.isoformat())
    # A memory budget (the export class's max_memory_usage) that a whole hour of ~1 KB rows exceeds.
    tight = services.clickhouse.with_class_settings(Workload.EXPORT, max_memory_usage=12_000_000)
    result = await job(services, Clock(start + HOUR + MINUTE), clickhouse=tight).run(project_id, owner="j")
    assert result["splits"] >= 2 and result["rows"] == 8000 and result["files"] >= 3
    assert services.metrics.blob_export_splits.labels("observations", "MEMORY_LIMIT")._value.get() >= 2
    exported = await exported_rows(store_of(services, project_id), project_id)
    assert sorted(r["id"] for r in exported["observations"]) == sorted(f"o{i}" for i in range(8000))
    report = await verify_export(services.clickhouse, store_of(services, project_id), project_id)
    assert report.ok, report.as_json()


class FlakyStore:
    """A real destination store whose uploads fail after `after_bytes`, `failures` times (for keys
    containing `only`), like a connection dropped in the middle of a multipart upload."""

    def __init__(self, store: Any, *, after_bytes: int, failures: int, only: str = "") -> None:
        self._store, self.after_bytes, self.failures, self.only = store, after_bytes, failures, only
        self.config = store.config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def open_sync_writer(self, key: str, **kwargs: Any) -> Any:
        from contextlib import contextmanager

        flaky = self

        @contextmanager
        def opened() -> Any:
            with flaky._store.open_sync_writer(key, part_size=5 * 1024 * 1024) as writer:
                if flaky.only in key and flaky.failures > 0:
                    yield _FailingWriter(writer, flaky)
                else:
                    yield writer

        return opened()


class _FailingWriter:
    def __init__(self, writer: Any, flaky: FlakyStore) -> None:
        self._writer, self._flaky, self._written, self._broken = writer, flaky, 0, False

    def write(self, data: Any) -> int:
        if self._written > self._flaky.after_bytes:
            if not self._broken:  # one failure per upload, however often the caller writes after it
                self._broken = True
                self._flaky.failures -= 1
            raise OSError("injected: connection reset during multipart upload")
        self._written += memoryview(data).nbytes
        return self._writer.write(data)


async def test_upload_failure_mid_multipart_is_aborted_split_and_retried(
    services: Any, project: Any, moto_endpoint: str, bucket: str, s3_client: Any
) -> None:
    from tracehouse.export.verify import verify_export

    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await _bulky_observations(services, project_id, start, count=12000)
    make_integration(
        services.metadata,
        project_id,
        exportMode="FROM_CUSTOM_DATE",
        exportStartDate=start.isoformat(),
        **s3_integration(moto_endpoint, bucket),
    )
    store = store_of(services, project_id)
    flaky = FlakyStore(store, after_bytes=6 * 1024 * 1024, failures=1, only="/observations/")
    result = await job(services, Clock(start + HOUR + MINUTE), store_for=lambda i: flaky).run(project_id, owner="j")
    assert flaky.failures == 0 and result["splits"] >= 1 and result["rows"] == 12000
    assert "Uploads" not in s3_client.list_multipart_uploads(Bucket=bucket)  # the broken upload was aborted
    report = await verify_export(
        services.clickhouse,
        store_of(services, project_id),
        project_id,
    )
    assert report.ok, report.as_json()


async def test_failed_job_keeps_cursor_and_retries_the_same_window(
    services: Any, project: Any, moto_endpoint: str, bucket: str
) -> None:
    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": start + MINUTE}])
    await write_rows(services.clickhouse, "observations", project_id, [{"id": "o1", "event_ts": start + MINUTE}])
    make_integration(
        services.metadata,
        project_id,
        exportMode="FROM_CUSTOM_DATE",
        exportStartDate=start.isoformat(),
        **s3_integration(moto_endpoint, bucket),
    )
    store = store_of(services, project_id)
    broken = FlakyStore(store, after_bytes=-1, failures=10**6, only="/observations/")
    with pytest.raises(OSError, match="injected"):
        await job(services, Clock(start + HOUR + MINUTE), store_for=lambda i: broken).run(project_id, owner="j")
    integration = state.load_integration(services.metadata, BOX, project_id)
    assert integration is not None and integration.last_sync_at == start  # the cursor did not move
    assert integration.pending_window is not None and integration.pending_window.end == start + HOUR
    assert await manifests(store, project_id) == []  # nothing committed; the traces file is unreferenced
    progress = await _status(services, project_id)
    assert "injected" in progress["lastError"] and progress["exportedUntil"] == iso(start)
    # Retried later (the clock moved on), the job exports the same window, not a longer one.
    result = await job(services, Clock(start + 5 * HOUR)).run(project_id, owner="j2")
    assert result["window"] == {"start": iso(start), "end": iso(start + HOUR)} and result["rows"] == 2
    assert (await _status(services, project_id))["lastError"] is None
    # Same window, same names: the earlier attempt's file was overwritten, nothing is left unreferenced.
    [manifest] = await manifests(store, project_id)
    referenced = {f["key"] for f in manifest["files"]}
    assert {i.key for i in await store.list(project_id) if "/manifests/" not in i.key} == {
        k.removeprefix(store.config.key_prefix) for k in referenced
    }


async def _status(services: Any, project_id: str) -> dict[str, Any]:
    from tracehouse.export.integrations import list_integrations, progress_view

    [row] = list_integrations(services.metadata, project_id)
    return progress_view(row, datetime.now(UTC)).model_dump(by_alias=True)


async def test_crash_after_manifest_before_cursor_rewrites_the_same_files(
    services: Any, project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracehouse.export.verify import verify_export

    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await write_rows(
        services.clickhouse, "traces", project_id, [{"id": f"t{i}", "event_ts": start + i * MINUTE} for i in range(30)]
    )
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=start.isoformat())
    real_advance = state.advance_cursor

    def dies(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("metadata database went away after the manifest was written")

    monkeypatch.setattr(state, "advance_cursor", dies)
    with pytest.raises(ConnectionError):
        await job(services, Clock(start + HOUR + MINUTE)).run(project_id, owner="j")
    store = store_of(services, project_id)
    before = sorted(i.key for i in await store.list(project_id))
    assert len(before) == 2  # the manifest and its file stay: the manifest references the file
    monkeypatch.setattr(state, "advance_cursor", real_advance)
    result = await job(services, Clock(start + 3 * HOUR)).run(project_id, owner="j")
    assert result["window"] == {"start": iso(start), "end": iso(start + HOUR)}
    assert sorted(i.key for i in await store.list(project_id)) == before  # same names, overwritten
    report = await verify_export(services.clickhouse, store, project_id)
    assert report.ok and report.tables["traces"].exported_rows == 30, report.as_json()


# --- the completeness property -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_completeness_property(services: Any, project: Any, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random writes, updates and deletes interleaved with exports and injected faults (uploads that
    break mid-file, jobs that fail, a crash between manifest and cursor). Afterwards the manifested
    files, reduced to the newest version per id, equal ClickHouse's state exactly; verify agrees."""
    import random

    from tracehouse.export.verify import verify_export

    rng = random.Random(seed)
    project_id, _ = project
    t = _hour_floor(datetime.now(UTC)) - 10 * DAY
    make_integration(
        services.metadata,
        project_id,
        exportFrequency="every_15_minutes",
        exportMode="FROM_CUSTOM_DATE",
        exportStartDate=t.isoformat(),
        fileType=rng.choice(["PARQUET", "JSONL", "CSV"]),
    )
    store = store_of(services, project_id)
    live: dict[str, dict[str, dict[str, Any]]] = {"traces": {}, "observations": {}, "scores": {}}
    created = 0
    real_advance = state.advance_cursor
    faults = {"failed_jobs": 0, "crashes": 0}

    for _step in range(45):
        t += timedelta(minutes=rng.randint(1, 25))
        action = rng.random()
        if action < 0.45:  # new rows
            table = rng.choice(list(live))
            rows = []
            for _ in range(rng.randint(1, 6)):
                created += 1
                row: dict[str, Any] = {
                    "id": f"{table[0]}{created}",
                    "event_ts": t,
                    "timestamp": t,
                    "start_time": t,
                    "name": f"n{created}",
                    "value": float(created),
                }
                live[table][row["id"]] = row
                rows.append(row)
            await write_rows(services.clickhouse, table, project_id, rows)
        elif action < 0.65:  # updates and deletes of existing rows: new versions, same keys
            table = rng.choice(list(live))
            if not live[table]:
                continue
            versions = []
            for item_id in rng.sample(sorted(live[table]), min(3, len(live[table]))):
                row = {**live[table][item_id], "event_ts": t}
                if rng.random() < 0.3:
                    row["is_deleted"] = 1
                    del live[table][item_id]
                else:
                    row["name" if table != "scores" else "value"] = (
                        f"{row['name']}+" if table != "scores" else row["value"] + 0.5
                    )
                    live[table][item_id] = row
                versions.append(row)
            await write_rows(services.clickhouse, table, project_id, versions)
        else:  # an export run, possibly with a fault
            fault = rng.choice(["none", "none", "broken_upload", "failed_job", "crash"])
            store_for = None
            if fault == "broken_upload":
                flaky = FlakyStore(store, after_bytes=0, failures=1)
                store_for = lambda i, flaky=flaky: flaky  # noqa: E731
            elif fault == "failed_job":
                broken = FlakyStore(store, after_bytes=-1, failures=10**6, only="/observations/")
                store_for = lambda i, broken=broken: broken  # noqa: E731
            elif fault == "crash":

                def crash(*args: Any, **kwargs: Any) -> bool:
                    monkeypatch.setattr(state, "advance_cursor", real_advance)
                    raise ConnectionError("crashed after the manifest")

                monkeypatch.setattr(state, "advance_cursor", crash)
            export = job(services, Clock(t), store_for=store_for)
            try:
                while "window" in await export.run(project_id, owner=f"job-{_step}"):
                    pass
            except (OSError, ConnectionError):
                faults["failed_jobs" if fault != "crash" else "crashes"] += 1
            monkeypatch.setattr(state, "advance_cursor", real_advance)

    await run_until_idle(job(services, Clock(t + DAY)), project_id)
    exported = await exported_rows(store, project_id)
    for table, by_id in live.items():
        latest = reduce_latest(exported.get(table, []))
        field = "value" if table == "scores" else "name"
        assert {i: r[field] for i, r in latest.items()} == {i: r[field] for i, r in by_id.items()}, table
        assert set(latest) == set(await current_state(services.clickhouse, table, project_id)), table
    report = await verify_export(services.clickhouse, store, project_id)
    assert report.ok, report.as_json()
    assert created > 20 and faults["failed_jobs"] + faults["crashes"] > 0  # the faults did strike


# --- visibility: status API and CLI, verify CLI ------------------------------------------------------
async def test_status_api_reports_progress(services: Any, project: Any) -> None:
    import dataclasses

    import httpx

    from tracehouse.web.app import create_app

    project_id, headers = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": start + MINUTE}])
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=start.isoformat())
    clock = Clock(start + HOUR + 10 * MINUTE)
    await job(services, clock).run(project_id, owner="j")
    settings = services.settings.model_copy(update={"admin_api_key": "admin-secret"})
    app = create_app(dataclasses.replace(services, settings=settings))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        mine = (await client.get("/api/public/integrations/blob-storage/status", headers=headers)).json()["data"]
        admin = await client.get(
            "/api/public/integrations/blob-storage/status", headers={"Authorization": "Bearer admin-secret"}
        )
        anonymous = await client.get("/api/public/integrations/blob-storage/status")
    assert anonymous.status_code == 401
    [view] = mine
    assert view["projectId"] == project_id and view["exportedUntil"] == iso(start + HOUR)
    assert view["lastJob"]["rows"] == 1 and view["lastJob"]["files"] == 1 and view["lastJob"]["durationMs"] >= 0
    assert view["lastError"] is None and view["pendingWindow"] is None and view["running"] is False
    assert view["nextRunAt"] is not None and view["lagMinutes"] > 0
    assert project_id in [v["projectId"] for v in admin.json()["data"]]


VERIFY_SETUP = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from export_helpers import Clock, config, write_rows, BOX
from tracehouse.clickhouse import ClickHouse, migrate_clickhouse
from tracehouse.export.service import ExportJob
from tracehouse.metadata import MetadataDB
from tracehouse.metrics import Metrics
from tracehouse.settings import load_settings

async def main():
    settings = load_settings()
    ch = ClickHouse.from_settings(settings)
    await migrate_clickhouse(ch)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = [{"id": f"t{i}", "event_ts": start + timedelta(minutes=i)} for i in range(50)]
    await write_rows(ch, "traces", "v-p", rows)
    export = ExportJob(clickhouse=ch, metadata=MetadataDB(settings.metadata_url), box=BOX,
                       config=config(settings.data_dir), metrics=Metrics(), clock=Clock(datetime.now(UTC)))
    while "window" in await export.run("v-p", owner="setup"):
        pass
    ch.close()

asyncio.run(main())
"""


def test_verify_and_status_cli(tmp_path: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    env = {
        "PATH": "/usr/bin:/bin",
        "TRACEHOUSE_DATA_DIR": str(tmp_path / "d"),
        "ENCRYPTION_KEY": "5e" * 32,
        "PYTHONPATH": str(tests),
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tracehouse", *args], env=env, capture_output=True, text=True, timeout=120
        )

    assert run("projects", "create", "v", "--id", "v-p", "--no-with-key").returncode == 0
    made = run("export", "integrations", "set", "--project", "v-p", "--type", "LOCAL", "--bucket", "out")
    assert made.returncode == 0, made.stderr
    setup = subprocess.run([sys.executable, "-c", VERIFY_SETUP], env=env, capture_output=True, text=True, timeout=120)
    assert setup.returncode == 0, setup.stderr[-2000:]
    ok = run("export", "verify", "--project", "v-p")
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr
    assert "traces: 50 current rows, 50 exported, 0 missing, 0 duplicated" in ok.stdout
    status = run("export", "status", "--project", "v-p")
    assert status.returncode == 0 and "v-p: up_to_date; exported until" in status.stdout, status.stdout

    # Lose one data file: verify names the problem and fails.
    files = sorted((tmp_path / "d" / "exports" / "v-p" / "out" / "v-p" / "traces").iterdir())  # <project>/<bucket>
    files[0].unlink()
    broken = run("export", "verify", "--project", "v-p", "--json")
    assert broken.returncode == 1
    import json

    report = json.loads(broken.stdout)
    assert report["ok"] is False and report["badFiles"] and report["tables"]["traces"]["missing"] > 0


async def test_export_worker_schedules_and_runs_jobs_through_the_queue(services: Any, project: Any) -> None:
    """The real wiring: export-role worker, scheduler cron on its queue, processing jobs chained."""
    import dataclasses

    from helpers import until
    from tracehouse.settings import WorkerRole
    from tracehouse.workers import start_workers

    project_id, _ = project
    start = datetime.now(UTC) - DAY
    await write_rows(
        services.clickhouse, "traces", project_id, [{"id": f"t{i}", "event_ts": start + i * MINUTE} for i in range(20)]
    )
    make_integration(services.metadata, project_id)
    settings = services.settings.model_copy(update={"export_schedule_interval_s": 1})
    runner = await start_workers(dataclasses.replace(services, settings=settings), WorkerRole.EXPORT)
    try:

        async def exported_until_recent() -> Any:
            integration = state.load_integration(services.metadata, BOX, project_id)
            lag = datetime.now(UTC) - (integration.last_sync_at or start) if integration else DAY
            return integration if lag < 2 * HOUR else None

        await until(exported_until_recent, timeout=60)
    finally:
        await runner.shutdown(10)
    exported = await exported_rows(store_of(services, project_id), project_id)
    assert sorted(r["id"] for r in exported["traces"]) == sorted(f"t{i}" for i in range(20))


async def test_an_older_attempt_that_lost_its_lease_writes_no_manifest(services: Any, project: Any) -> None:
    """The queue may re-run a job it thinks stalled while the first attempt still runs: the newer
    attempt takes the lease over, and the older one stops before writing a manifest or moving the cursor."""
    import asyncio

    project_id, _ = project
    start = _hour_floor(datetime.now(UTC)) - DAY
    await write_rows(services.clickhouse, "traces", project_id, [{"id": "t1", "event_ts": start + MINUTE}])
    await write_rows(services.clickhouse, "observations", project_id, [{"id": "o1", "event_ts": start + MINUTE}])
    make_integration(services.metadata, project_id, exportMode="FROM_CUSTOM_DATE", exportStartDate=start.isoformat())
    store = store_of(services, project_id)
    in_observations, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    class SlowStore:
        config = store.config

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def open_sync_writer(self, key: str, **kwargs: Any) -> Any:
            if "/observations/" in key:
                loop.call_soon_threadsafe(in_observations.set)
                asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=30)
            return store.open_sync_writer(key, **kwargs)

    clock = Clock(start + HOUR + MINUTE)
    first = asyncio.create_task(job(services, clock, store_for=lambda i: SlowStore()).run(project_id, owner="job-1"))
    await asyncio.wait_for(in_observations.wait(), 30)
    second = await job(services, clock).run(project_id, owner="job-1")  # the queue's re-run, same job id
    assert second["rows"] == 2
    release.set()
    assert (await first) == {"skipped": "a newer attempt took this export over"}
    [manifest] = await manifests(store, project_id)
    assert sum(f["rows"] for f in manifest["files"]) == 2
    integration = state.load_integration(services.metadata, BOX, project_id)
    assert integration is not None and integration.last_sync_at == start + HOUR


async def test_undecryptable_secret_fails_the_job_and_shows_in_status(
    services: Any, project: Any, moto_endpoint: str, bucket: str
) -> None:
    from export_helpers import config
    from tracehouse.errors import ConfigError
    from tracehouse.export.crypto import SecretBox
    from tracehouse.export.service import ExportJob

    project_id, _ = project
    make_integration(services.metadata, project_id, **s3_integration(moto_endpoint, bucket))
    wrong_key = ExportJob(
        clickhouse=services.clickhouse,
        metadata=services.metadata,
        box=SecretBox("77" * 32),
        config=config(services.settings.data_dir),
        metrics=services.metrics,
    )
    with pytest.raises(ConfigError):
        await wrong_key.run(project_id, owner="j")
    assert "ConfigError" in (await _status(services, project_id))["lastError"]
