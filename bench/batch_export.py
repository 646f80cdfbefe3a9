"""Batch export throughput and memory: the full job against the bare pipeline, per format, at two sizes.

    .venv/bin/python bench/batch_export.py [--sizes 200000,400000] [--rounds 3]
                                           [--formats CSV,JSON,JSONL,PARQUET,JSONL+gzip]
                                           [--profile DIR] [--quick] [--results-dir DIR] [--no-record]

For each size N, a loader process fills a scratch embedded ClickHouse (a temporary folder under
/tmp, deleted afterwards) with N traces of one project, written with `INSERT ... SELECT FROM
numbers()` in 100k-row chunks, timestamps spread over N / 25,000 days (a fixed density: doubling
the data doubles the history), then `OPTIMIZE TABLE traces FINAL` so that no background merge runs
while we measure. Each trace has an input of about 1.1 KB and an output of about 0.7 KB (chat
messages: prose-like words plus random characters), a 5-key metadata map (plain text and JSON
values), tags, user, session, release and version. Every `event_ts` is in the past, so an export
created now holds all N rows.

Then, per format and round, each in a fresh process (chDB allows one process per data directory,
and a fresh process gives a per-export peak RSS), in alternating order:

- job: a SQLite metadata database and a project; the timed part is `create_export` (validation, the
  record; the queue is a stub that accepts the job) and `BatchExportJob.run`, i.e. the count query,
  the record's progress every 5,000 rows, the rows through `open_encoder` into
  `store.blobs.open_sync_writer` (the LOCAL export store, multipart writer, SHA-256), the signed
  link and the COMPLETED record;
- bare: the same SQL (`export_sql` for the same request, as of now; its per-hour count and one
  query per time range, as the job reads a time-ordered export) streamed by
  `ClickHouse.stream_blocking` (export workload class, the same query settings and batch rows)
  through `named` and the same encoder into a plain local file opened with `open()`: no record, no
  count, no progress, no multipart store, no hash.

Printed per format: rows, MB written, rows/s and MB/s of the job, rows/s of the bare pipeline, the
ratio job/bare (by wall clock and by CPU time: other work on this 2-core machine slows wall-clock
time, and not equally for both modes), and the job's peak RSS (VmHWM of its process) at both sizes
and its growth. Targets, per format: ratio >= 0.8 (at the larger size) and peak RSS growing < 20%
when the data doubles. Every figure is the median of the rounds. MB = 10^6 bytes, MiB = 2^20.
With --profile DIR each measuring process also writes a cProfile of its export there
(`<mode>-<format>-<rows>-<round>.prof`; the job's worker thread is the one profiled).
Figures go to bench/results/batch_export.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pyarrow as pa

from tracehouse.batch_export.filters import parse_query
from tracehouse.batch_export.formats import named, open_encoder
from tracehouse.batch_export.models import CreateBatchExportRequest, FileFormat, Status, TableName
from tracehouse.batch_export.notify import Mailer
from tracehouse.batch_export.service import BatchExportJob, JobConfig, create_export, get_record
from tracehouse.batch_export.sources import export_sql, plan_ranges, query_settings
from tracehouse.batch_export.storage import build_export_store
from tracehouse.clickhouse import ClickHouse, Workload, migrate_clickhouse
from tracehouse.export.formats import HashingSink
from tracehouse.logging import configure_logging
from tracehouse.metadata import MetadataDB, create_project
from tracehouse.settings import load_settings

if __package__:  # python -m bench.batch_export
    from bench import common
else:  # python bench/batch_export.py: bench/ is on sys.path
    import common  # type: ignore[no-redef]

PROJECT = "bench-batch-export"
CHUNK = 100_000  # rows per INSERT ... SELECT
DAY_MS = 86_400_000
# Trace timestamps spread over the days before the base at a fixed density, so doubling the data
# doubles the history (as a project's data grows), not the rows of each day.
ROWS_PER_DAY = 25_000
RESULT = "BENCH_RESULT "
MiB = 1024 * 1024
FORMATS = "CSV,JSON,JSONL,PARQUET,JSONL+gzip"
# Environment that would point a child away from its scratch folder (or off this machine).
_FOREIGN_ENV = (
    "CLICKHOUSE_URL",
    "CLICKHOUSE_EXPORT_URL",
    "DATABASE_URL",
    "TRACEHOUSE_DATA_DIR",
    "REDIS_URL",
    "REDIS_CONNECTION_STRING",
    "LANGFUSE_S3_BATCH_EXPORT_BUCKET",
    "LANGFUSE_S3_BATCH_EXPORT_ENDPOINT",
    "LANGFUSE_S3_BATCH_EXPORT_EXTERNAL_ENDPOINT",
    "SMTP_CONNECTION_URL",
)
# About 60 distinct words: text that compresses like prose, not like a repeated byte.
_VOCABULARY = (
    "the a of to and in is for on with that as by this from model answer user question context document "
    "retrieval query search result token prompt system assistant tool call function json value error latency "
    "cost output input summary report table customer order invoice product support ticket policy refund "
    "shipping account password email meeting schedule weather travel booking hotel flight"
)
_WORDS = _VOCABULARY.split()


@dataclasses.dataclass(frozen=True)
class Fmt:
    """One measured format: a FileFormat and whether it is gzipped (label e.g. JSONL+gzip)."""

    format: FileFormat
    gzipped: bool

    @property
    def label(self) -> str:
        return self.format.value + ("+gzip" if self.gzipped else "")

    @classmethod
    def parse(cls, text: str) -> Fmt:
        name, _, gz = text.strip().upper().partition("+")
        if gz not in ("", "GZIP"):
            raise argparse.ArgumentTypeError(f"unknown format {text!r} (e.g. CSV, JSONL+gzip)")
        fmt = FileFormat(name)
        if fmt is FileFormat.PARQUET and gz:
            raise argparse.ArgumentTypeError("Parquet takes no gzip (its pages are zstd)")
        return cls(fmt, bool(gz))


def _insert_sql(offset: int, count: int, base_ms: int, spread_ms: int) -> str:
    """N traces: input ~1.1 KB and output ~0.7 KB of chat JSON, metadata with 5 keys."""
    vocab = "[" + ",".join(f"'{w}'" for w in _WORDS) + "]"
    words = len(_WORDS)

    def text(salt: int, n_words: int) -> str:
        return (
            f"arrayStringConcat(arrayMap(j -> vocab[1 + cityHash64(number, j, {salt}) % {words}], "
            f"range({n_words})), ' ')"
        )

    return f"""
INSERT INTO traces (id, timestamp, name, user_id, metadata, release, version, project_id, environment,
    public, bookmarked, tags, input, output, session_id, created_at, updated_at, event_ts, is_deleted)
WITH {vocab} AS vocab,
     fromUnixTimestamp64Milli(toInt64({base_ms} - (number * 7919) % {spread_ms})) AS ts
SELECT
    concat('trace-', leftPad(toString(number), 10, '0')),
    ts,
    ['chat', 'rag-answer', 'agent-run', 'summarize', 'classify', 'search'][1 + number % 6],
    concat('user-', toString(number % 5000)),
    map('region', ['eu', 'us', 'ap'][1 + number % 3],
        'sdk', 'python-3.2.1',
        'customer_tier', ['free', 'pro', 'enterprise'][1 + number % 3],
        'request', concat('{{"id":"req-', toString(number), '","retries":', toString(number % 3), '}}'),
        'features', '["streaming","tools"]'),
    'r-2026.11',
    concat('v', toString(number % 7)),
    '{PROJECT}',
    if(number % 10 = 0, 'staging', 'production'),
    number % 97 = 0,
    number % 53 = 0,
    if(number % 3 = 0, ['prod', 'chat'], ['prod']),
    concat('{{"messages":[{{"role":"system","content":"You are a helpful assistant. ', {text(1, 25)}, '"}},',
           '{{"role":"user","content":"', {text(2, 110)}, ' ', randomPrintableASCII(120), '"}}]}}'),
    concat('{{"role":"assistant","content":"', {text(3, 90)}, ' ', randomPrintableASCII(80),
           '","finish_reason":"stop"}}'),
    concat('session-', toString(intDiv(number, 5))),
    ts,
    ts + toIntervalMillisecond(1500 + number % 5000),
    ts + toIntervalMillisecond(1500 + number % 5000),
    0
FROM numbers({offset}, {count})
"""


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------
_rss = common.process_memory  # this process's RSS and peak RSS (VmHWM), MiB
_cpu_s = common.cpu_seconds


def _report(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result), flush=True)


def _clickhouse(scratch: Path) -> tuple[Any, ClickHouse]:
    settings = load_settings(data_dir=scratch)
    ch = ClickHouse.from_settings(settings)
    ch.backend(Workload.EXPORT).query_arrow("SELECT 1", None, ch.settings_for(Workload.EXPORT))  # warm
    return settings, ch


async def _load(args: argparse.Namespace) -> None:
    settings = load_settings(data_dir=args.scratch)
    ch = ClickHouse.from_settings(settings)
    long = {"max_execution_time": 3600}
    base_ms = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    started = time.perf_counter()
    try:
        await migrate_clickhouse(ch)
        for offset in range(0, args.rows, CHUNK):
            spread_ms = max(1, -(-args.rows // ROWS_PER_DAY)) * DAY_MS
            sql = _insert_sql(offset, min(CHUNK, args.rows - offset), base_ms, spread_ms)
            await ch.command(sql, workload=Workload.INGESTION, settings=long)
        inserted = time.perf_counter()
        await ch.command("OPTIMIZE TABLE traces FINAL", workload=Workload.INGESTION, settings=long)
        parts = await ch.query(
            "SELECT count() AS parts, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, "
            "sum(data_uncompressed_bytes) AS uncompressed FROM system.parts "
            "WHERE database = currentDatabase() AND table = 'traces' AND active",
            workload=Workload.INGESTION,
        )
        sizes = await ch.query(
            "SELECT avg(length(input)) AS input, avg(length(output)) AS output, "
            "avg(length(toJSONString(metadata))) AS metadata FROM traces",
            workload=Workload.INGESTION,
        )
    finally:
        ch.close()
    _report(
        {
            **{k: int(v) for k, v in parts[0].items()},
            **{f"avg_{k}_bytes": float(v) for k, v in sizes[0].items()},
            "insert_s": inserted - started,
            "optimize_s": time.perf_counter() - inserted,
        }
    )


def _profiled(profile: Path | None, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, profiled with cProfile into `profile` (in whichever thread it runs)."""
    if profile is None:
        return fn

    def wrapper(*a: Any, **kw: Any) -> Any:
        prof = cProfile.Profile()
        prof.enable()
        try:
            return fn(*a, **kw)
        finally:
            prof.disable()
            profile.parent.mkdir(parents=True, exist_ok=True)
            prof.dump_stats(str(profile))

    return wrapper


def _bare(args: argparse.Namespace) -> None:
    fmt = Fmt.parse(args.format)
    settings, ch = _clickhouse(args.scratch)
    config = JobConfig.from_settings(settings)
    query, order = parse_query(TableName.TRACES, {}, None)
    now = datetime.now(UTC)
    sql = export_sql(TableName.TRACES, query, order, PROJECT, now.replace(microsecond=now.microsecond // 1000 * 1000))
    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = args.run_dir / f"bare.{fmt.format.extension(fmt.gzipped)}"
    before = _rss()

    def ranged() -> Generator[pa.RecordBatch]:
        """The same query as the job's: per time range when the export is read in ranges."""
        chunks = [sql.params]
        if sql.hours is not None:
            merged = ch.settings_for(Workload.EXPORT, query_settings())
            per_hour = ch.backend(Workload.EXPORT).query_arrow(sql.hours, sql.params, merged).to_pylist()
            hours = [(datetime.fromtimestamp(int(r["h"]), UTC), int(r["n"])) for r in per_hour]
            ranges = plan_ranges(hours, sql.descending, config.range_rows)
            chunks = [{**sql.params, **r.params()} for r in ranges]
        for params in chunks:
            batches = ch.stream_blocking(
                sql.rows, params, workload=Workload.EXPORT, settings=query_settings(), batch_rows=config.progress_rows
            )
            with closing(batches):
                yield from batches

    def export() -> int:
        batches = ranged()
        rows = 0
        with closing(batches), open(path, "wb") as out:
            encoder = open_encoder(
                fmt.format,
                fmt.gzipped,
                cast(HashingSink, out),  # a plain file: no hash, no count
                sql.columns,
                row_group_rows=config.row_group_rows,
                empty_schema=_no_rows,
            )
            for batch in batches:
                encoder.write(named(batch, sql.columns))
                rows += batch.num_rows
            encoder.close()
        return rows

    started, cpu = time.perf_counter(), _cpu_s()
    rows = _profiled(args.profile, export)()
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    ch.close()
    size = path.stat().st_size
    path.unlink()
    _report(
        {
            "mode": "bare",
            "rows": rows,
            "batch_rows": config.progress_rows,
            "row_group_rows": config.row_group_rows,
            "bytes": size,
            "seconds": seconds,
            "cpu_s": cpu,
            "rss_before_mib": before["rss_mib"],
            **_rss(),
        }
    )


def _no_rows() -> pa.Schema:
    raise AssertionError("the bench's export always has rows")


class _NoQueue:
    """The producer create_export enqueues to: accepts the job, runs nothing (we run it here)."""

    async def add(self, queue: str, name: str, data: dict[str, Any], **opts: Any) -> None:
        return None


async def _job(args: argparse.Namespace) -> None:
    configure_logging("warning")  # structlog would otherwise print every progress event to stdout
    fmt = Fmt.parse(args.format)
    settings, ch = _clickhouse(args.scratch)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    metadata = MetadataDB(f"sqlite:///{args.run_dir / 'metadata.db'}")
    metadata.migrate()
    create_project(metadata, "bench batch export", PROJECT)
    store = build_export_store(settings)
    job = BatchExportJob(
        clickhouse=ch,
        metadata=metadata,
        store=store,
        mailer=Mailer.from_settings(settings),
        config=JobConfig.from_settings(settings),
    )
    job._write = _profiled(args.profile, job._write)  # noqa: SLF001 - profile the worker thread
    body = CreateBatchExportRequest.model_validate(
        {"tableName": "traces", "format": fmt.format.value, "compressed": fmt.gzipped}
    )
    before = _rss()
    started, cpu = time.perf_counter(), _cpu_s()
    created = await create_export(
        metadata=metadata,
        producer=_NoQueue(),
        settings=settings,
        project_id=PROJECT,
        body=body,
    )
    result = await job.run(created.id)
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    record = get_record(metadata, created.id)
    if record is None or record.status is not Status.COMPLETED or record.object_key is None:
        raise SystemExit(f"the export did not complete: {result} {record}")
    await store.blobs.delete(record.object_key)
    ch.close()
    metadata.dispose()
    _report(
        {
            "mode": "job",
            "rows": record.rows_exported,
            "bytes": record.size_bytes,
            "seconds": seconds,
            "cpu_s": cpu,
            "rss_before_mib": before["rss_mib"],
            **_rss(),
        }
    )


# --------------------------------------------------------------------------------------------
# The parent: load, measure, summarize
# --------------------------------------------------------------------------------------------
def _child(role: str, scratch: Path, rows: int, extra: list[str] | None = None, timeout: float = 3600) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", role, "--scratch", str(scratch)]
    command += ["--rows", str(rows), *(extra or [])]
    return common.run_child(command, role, marker=RESULT, drop_env=_FOREIGN_ENV, timeout=timeout)


@dataclasses.dataclass
class Measured:
    """The rounds of one format at one size."""

    fmt: str
    rows: int
    job: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    bare: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def median(self, mode: str, key: str) -> float:
        return float(statistics.median(r[key] for r in getattr(self, mode)))

    def rows_per_s(self, mode: str) -> float:
        return self.rows / self.median(mode, "seconds")

    def mb_per_s(self, mode: str) -> float:
        return self.median(mode, "bytes") / 1e6 / self.median(mode, "seconds")

    @property
    def ratio(self) -> float:
        """Job rows/s over bare rows/s: the per-round ratios' median (each round's pair ran back to back)."""
        return float(statistics.median(b["seconds"] / j["seconds"] for j, b in zip(self.job, self.bare, strict=True)))

    @property
    def cpu_ratio(self) -> float:
        return float(statistics.median(b["cpu_s"] / j["cpu_s"] for j, b in zip(self.job, self.bare, strict=True)))


def _measure_size(
    rows: int, formats: list[Fmt], rounds: int, profile: Path | None
) -> tuple[dict[str, Any], dict[str, Measured]]:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-batch-export-{rows}-", dir="/tmp"))
    try:
        print(f"[{rows:,} rows] loading into {scratch} ...", flush=True)
        loaded = _child("load", scratch, rows)
        print(
            f"[{rows:,} rows] loaded in {loaded['insert_s']:.1f}s (+ OPTIMIZE FINAL {loaded['optimize_s']:.1f}s): "
            f"{loaded['rows']:,} traces in {loaded['parts']} parts, {loaded['uncompressed'] / 1e6:,.0f} MB "
            f"uncompressed, {loaded['compressed'] / 1e6:,.0f} MB on disk; per row: input "
            f"{loaded['avg_input_bytes']:,.0f} B, output {loaded['avg_output_bytes']:,.0f} B, metadata "
            f"{loaded['avg_metadata_bytes']:,.0f} B",
            flush=True,
        )
        if loaded["rows"] != rows:
            raise SystemExit(f"loaded {loaded['rows']} rows, expected {rows}")
        measured = {f.label: Measured(f.label, rows) for f in formats}
        for round_no in range(rounds):
            # Rotate the formats and alternate which mode goes first, so drift hits all alike.
            shift = round_no % len(formats)
            for i, fmt in enumerate(formats[shift:] + formats[:shift]):
                order = ("bare", "job") if (round_no + i) % 2 == 0 else ("job", "bare")
                for mode in order:
                    extra = ["--format", fmt.label, "--run-dir", str(scratch / f"run-{mode}")]
                    if profile is not None:
                        extra += ["--profile", str(profile / f"{mode}-{fmt.label}-{rows}-{round_no + 1}.prof")]
                    result = _child(mode, scratch, rows, extra)
                    shutil.rmtree(scratch / f"run-{mode}", ignore_errors=True)
                    if result["rows"] != rows:
                        raise SystemExit(f"{mode} {fmt.label} exported {result['rows']} rows, expected {rows}")
                    getattr(measured[fmt.label], mode).append(result)
                    print(
                        f"[{rows:,} rows] round {round_no + 1} {fmt.label:<10} {mode:<4}: {result['seconds']:6.2f}s "
                        f"({result['cpu_s']:6.2f} CPU s), {result['bytes'] / 1e6:7,.1f} MB, "
                        f"peak RSS {result['hwm_mib']:6,.0f} MiB (RSS {result['rss_before_mib']:,.0f} MiB before)",
                        flush=True,
                    )
        return loaded, measured
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _growth(small: Measured, large: Measured, mode: str) -> float:
    return (large.median(mode, "hwm_mib") / small.median(mode, "hwm_mib") - 1) * 100


def _summary(formats: list[Fmt], sizes: list[int], results: dict[int, dict[str, Measured]]) -> None:
    small, large = sizes[0], sizes[-1]
    two = len(sizes) > 1
    print()
    header = (
        f"{'format':<10} {'rows':>9} {'MB':>7} | {'job rows/s':>10} {'job MB/s':>8} | {'bare rows/s':>11} | "
        f"{'ratio':>5} {'cpu':>5} {'':4} | {'RSS S':>6} {'RSS 2S':>6} {'growth':>7} {'':4} | {'bare RSS S/2S':>13}"
    )
    print(header + "   (RSS: job peak, MiB)")
    print("-" * len(header))
    for fmt in formats:
        s, m = results[small][fmt.label], results[large][fmt.label]
        growth = _growth(s, m, "job") if two else None
        grown = "-" if growth is None else f"{growth:+.1f}%"
        verdict = "" if growth is None else ("PASS" if growth < 20 else "FAIL")
        print(
            f"{fmt.label:<10} {m.rows:>9,} {m.median('job', 'bytes') / 1e6:>7,.0f} | {m.rows_per_s('job'):>10,.0f} "
            f"{m.mb_per_s('job'):>8.1f} | {m.rows_per_s('bare'):>11,.0f} | {m.ratio:>5.3f} {m.cpu_ratio:>5.3f} "
            f"{'PASS' if m.ratio >= 0.8 else 'FAIL':4} | {s.median('job', 'hwm_mib'):>6,.0f} "
            f"{m.median('job', 'hwm_mib'):>6,.0f} {grown:>7} {verdict:4} | "
            f"{s.median('bare', 'hwm_mib'):>6,.0f}/{m.median('bare', 'hwm_mib'):<6,.0f}"
        )
    print(
        f"(rows/s, MB/s, ratio at {large:,} rows; ratio = job rows/s / bare rows/s, median over rounds; cpu = the "
        f"same by CPU seconds; RSS S/2S = job peak RSS at {small:,} / {large:,} rows)"
    )
    if two:
        print(
            f"\nratios at {small:,} rows: "
            + ", ".join(f"{f.label} {results[small][f.label].ratio:.3f}" for f in formats)
        )


def _record(
    recorder: common.Recorder,
    args: argparse.Namespace,
    formats: list[Fmt],
    sizes: list[int],
    loaded: dict[int, dict[str, Any]],
    results: dict[int, dict[str, Measured]],
) -> None:
    small, large = sizes[0], sizes[-1]
    two = len(sizes) > 1
    figures: dict[str, Any] = {"loaded": {str(n): loaded[n] for n in sizes}, "formats": {}}
    ratios: dict[str, float | None] = {}
    targets: list[dict[str, Any]] = []
    informational: list[dict[str, Any]] = []
    for fmt in formats:
        per_size = {}
        for n in sizes:
            m = results[n][fmt.label]
            per_size[str(n)] = {
                "ratio_job_over_bare": m.ratio,
                "cpu_ratio_bare_over_job": m.cpu_ratio,
                **{
                    mode: {
                        "seconds": m.median(mode, "seconds"),
                        "rows_per_s": m.rows_per_s(mode),
                        "mb": m.median(mode, "bytes") / 1e6,
                        "mb_per_s": m.mb_per_s(mode),
                        "cpu_s": m.median(mode, "cpu_s"),
                        "peak_rss_mib": m.median(mode, "hwm_mib"),
                        "rss_before_mib": m.median(mode, "rss_before_mib"),
                        "rounds": getattr(m, mode),
                    }
                    for mode in ("job", "bare")
                },
            }
            ratios[f"{fmt.label}_job_over_bare_rows_per_s_{n}"] = m.ratio
            ratios[f"{fmt.label}_cpu_bare_over_job_{n}"] = m.cpu_ratio
        growth = _growth(results[small][fmt.label], results[large][fmt.label], "job") if two else None
        bare_growth = _growth(results[small][fmt.label], results[large][fmt.label], "bare") if two else None
        figures["formats"][fmt.label] = {
            "sizes": per_size,
            "job_peak_rss_growth_pct": growth,
            "bare_peak_rss_growth_pct": bare_growth,
        }
        m = results[large][fmt.label]
        targets.append(
            common.target(
                f"batch export {fmt.label}: job vs bare pipeline",
                m.ratio,
                ">=",
                0.8,
                "ratio",
                f"rows/s of create_export + BatchExportJob.run over the same SQL streamed through the same encoder "
                f"into a plain file, {large:,} traces (median of {args.rounds} rounds)",
            )
        )
        targets.append(
            common.target(
                f"batch export {fmt.label}: job peak RSS growth",
                growth,
                "<",
                20,
                "%",
                f"peak RSS (VmHWM) of the job's process from {small:,} to {large:,} traces ({large / small:.1f}x data)",
            )
        )
        informational.append(info_rows(fmt.label, m.rows_per_s("job"), "job"))
        informational.append(info_rows(fmt.label, m.rows_per_s("bare"), "bare"))
    recorder.write(
        parameters={
            "sizes": sizes,
            "rounds": args.rounds,
            "formats": [f.label for f in formats],
            "table": "traces",
            "batch_rows": results[large][formats[0].label].bare[0].get("batch_rows"),
        },
        figures=figures,
        ratios=ratios,
        targets=targets,
        informational=informational,
    )


def info_rows(label: str, value: float, series: str) -> dict[str, Any]:
    return common.info(
        f"batch export {label} {series} rows/s", value, "rows/s", group="batch export rows/s", series=series
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200000,400000", help="trace counts, comma-separated (give S,2S)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per size, format and mode (median)")
    parser.add_argument("--formats", default=FORMATS, help=f"comma-separated (default {FORMATS})")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile per export into this folder")
    common.add_options(parser)
    # Internal: how the parent starts its loader and measuring processes.
    parser.add_argument("--child", choices=("load", "bare", "job"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "load":
        asyncio.run(_load(args))
        return
    if args.child == "bare":
        _bare(args)
        return
    if args.child == "job":
        asyncio.run(_job(args))
        return

    common.apply_quick(parser, args, {"sizes": "20000,40000"})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # remove the scratch folders (and the child) on kill
    recorder = common.Recorder("batch_export", args)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    formats = [Fmt.parse(f) for f in args.formats.split(",") if f.strip()]
    if args.profile is not None:
        args.profile = args.profile.resolve()
    free = shutil.disk_usage(tempfile.gettempdir()).free
    needed = max(sizes) * 8_000  # ~1 KB/row stored, a JSON file of ~3 KB/row, a sort spill, room to spare
    if free < needed:
        raise SystemExit(f"{free / 1e9:.1f} GB free under /tmp, need about {needed / 1e9:.1f} GB")
    started = time.perf_counter()
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
        "(other work slows both modes, and not equally; see the CPU-time ratio)",
        flush=True,
    )
    loaded: dict[int, dict[str, Any]] = {}
    results: dict[int, dict[str, Measured]] = {}
    for n in sizes:
        loaded[n], results[n] = _measure_size(n, formats, args.rounds, args.profile)
    _summary(formats, sizes, results)
    print(
        f"\ntotal bench time {time.perf_counter() - started:.0f}s; load average at the end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    _record(recorder, args, formats, sizes, loaded, results)


if __name__ == "__main__":
    main()
