"""Scheduled export throughput and memory: the export job against the bare pipeline, at two data sizes.

    .venv/bin/python bench/export.py [--sizes 1000000,2000000] [--rounds 1] [--row-group-rows N]
                                     [--quick] [--results-dir DIR] [--no-record]

For each size N, a loader process fills a scratch embedded ClickHouse (a temporary folder under
/tmp, deleted afterwards) with N observations of about 1 KB each for one project, written with
`INSERT ... SELECT FROM numbers()` in 200k-row chunks, then `OPTIMIZE TABLE observations FINAL`
so that no background merge runs while we measure. Every row's `event_ts` lies inside the same
15-minute window, so the job exports them all in one window. Then, each in a fresh process (chDB
allows one process per data directory, and a fresh process gives a clean peak RSS):

- bare: the job's observations query streamed by `ClickHouse.stream_blocking` (export workload
  class) into `write_batches` -> one Parquet file opened with plain `open()`; no job machinery;
- job: a SQLite metadata database, a project, a LOCAL Parquet FULL_HISTORY integration, and
  `ExportJob.run` called until it has no window left to export (the data window, then one empty
  window up to the horizon), writing through the blob store as in production.

Printed per size: rows/s and MB/s (Parquet written; and Arrow, the uncompressed batches the query
produced, measured in the bare run) of both, their ratio, and peak RSS (VmHWM) of both; then the
job's peak RSS growth from the first size to the second. Targets: ratio >= 0.8 and peak RSS growing
< 20% when the data doubles. MB = 10^6 bytes, MiB = 2^20 bytes. With --rounds > 1 every figure is
the median of the rounds (the two modes alternate which goes first). The CPU-time ratio is printed
as well: other work on this 2-core machine slows wall-clock time, and not equally for both modes.
Figures go to bench/results/export.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from tracehouse.clickhouse import ClickHouse, Workload, migrate_clickhouse
from tracehouse.export.crypto import SecretBox
from tracehouse.export.formats import FileFormat, write_batches
from tracehouse.export.integrations import IntegrationRequest, upsert_integration
from tracehouse.export.service import ExportConfig, ExportJob
from tracehouse.export.tables import TABLES, window_params
from tracehouse.export.windows import ExportWindow, floor_to, from_ms
from tracehouse.logging import configure_logging
from tracehouse.metadata import MetadataDB, create_project
from tracehouse.metrics import Metrics
from tracehouse.settings import load_settings

if __package__:  # python -m bench.export
    from bench import common
else:  # python bench/export.py: bench/ is on sys.path
    import common

PROJECT = "bench-export"
CHUNK = 200_000  # rows per INSERT ... SELECT
WINDOW = timedelta(minutes=15)  # the job's catch-up chunk (LANGFUSE_BLOB_STORAGE_EXPORT_CATCHUP_INTERVAL_MS)
EVENT_SPREAD_MS = 10 * 60_000  # every event_ts within 10 minutes of the window start
START_SPREAD_MS = 7 * 86_400_000  # start_time over the 7 days before that
RESULT = "BENCH_RESULT "
MiB = 1024 * 1024
# Environment that would point a child away from its scratch folder (or off this machine).
_FOREIGN_ENV = (
    "CLICKHOUSE_URL",
    "CLICKHOUSE_EXPORT_URL",
    "DATABASE_URL",
    "TRACEHOUSE_DATA_DIR",
    "REDIS_URL",
    "REDIS_CONNECTION_STRING",
)

# About 60 distinct words: text that compresses like prose, not like a repeated byte.
_WORDS = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "as",
    "by",
    "this",
    "from",
    "model",
    "answer",
    "user",
    "question",
    "context",
    "document",
    "retrieval",
    "query",
    "search",
    "result",
    "token",
    "prompt",
    "system",
    "assistant",
    "tool",
    "call",
    "function",
    "json",
    "value",
    "error",
    "latency",
    "cost",
    "output",
    "input",
    "summary",
    "report",
    "table",
    "customer",
    "order",
    "invoice",
    "product",
    "support",
    "ticket",
    "policy",
    "refund",
    "shipping",
    "account",
    "password",
    "email",
    "meeting",
    "schedule",
    "weather",
    "travel",
    "booking",
    "hotel",
    "flight",
)


def _insert_sql(offset: int, count: int, total: int, event_base_ms: int) -> str:
    """N observations, ~1 KB each: input ~560 B and output ~440 B of words plus random characters."""
    vocab = "[" + ",".join(f"'{w}'" for w in _WORDS) + "]"
    words = len(_WORDS)

    def text(salt: int, n_words: int) -> str:
        return (
            f"arrayStringConcat(arrayMap(j -> vocab[1 + cityHash64(number, j, {salt}) % {words}], "
            f"range({n_words})), ' ')"
        )

    return f"""
INSERT INTO observations (id, trace_id, project_id, environment, type, parent_observation_id, start_time,
    end_time, name, metadata, level, status_message, version, input, output, provided_model_name,
    model_parameters, usage_details, cost_details, total_cost, completion_start_time, prompt_name,
    prompt_version, event_ts, is_deleted)
WITH {vocab} AS vocab,
     fromUnixTimestamp64Milli(toInt64({event_base_ms} - 1000 - (number * 7919) % {START_SPREAD_MS})) AS st
SELECT
    concat('obs-', leftPad(toString(number), 10, '0')),
    concat('trace-', leftPad(toString(intDiv(number, 8)), 9, '0')),
    '{PROJECT}',
    if(number % 10 = 0, 'staging', 'production'),
    if(number % 2 = 0, 'SPAN', 'GENERATION'),
    if(number % 8 = 0, NULL, concat('obs-', leftPad(toString(number - number % 8), 10, '0'))),
    st,
    st + toIntervalMillisecond(50 + number % 4000),
    ['chat', 'retrieve', 'rerank', 'llm-call', 'tool:search', 'summarize'][1 + number % 6],
    map('user_id', concat('user-', toString(number % 5000)), 'region', ['eu', 'us', 'ap'][1 + number % 3],
        'sdk', 'python-3.2.1'),
    if(number % 50 = 0, 'WARNING', 'DEFAULT'),
    if(number % 50 = 0, 'rate limited, retried', NULL),
    NULL,
    concat('{{"messages":[{{"role":"system","content":"You are a helpful assistant."}},',
           '{{"role":"user","content":"', {text(1, 55)}, ' ', randomPrintableASCII(80), '"}}]}}'),
    concat('{{"role":"assistant","content":"', {text(2, 45)}, ' ', randomPrintableASCII(60), '"}}'),
    if(number % 2 = 1, 'gpt-4o-mini', NULL),
    if(number % 2 = 1, '{{"temperature":0.2,"max_tokens":1024}}', NULL),
    map('input', number % 2000, 'output', number % 700, 'total', number % 2000 + number % 700),
    map('total', toDecimal64((number % 2700) / 1000000, 12)),
    toDecimal64((number % 2700) / 1000000, 12),
    if(number % 2 = 1, st + toIntervalMillisecond(20), NULL),
    if(number % 4 = 1, 'qa-prompt', NULL),
    if(number % 4 = 1, toUInt16(3), NULL),
    fromUnixTimestamp64Milli(toInt64({event_base_ms} + intDiv(number * {EVENT_SPREAD_MS}, {total}))),
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


async def _load(args: argparse.Namespace) -> None:
    settings = load_settings(data_dir=args.scratch)
    ch = ClickHouse.from_settings(settings)
    long = {"max_execution_time": 3600}
    started = time.perf_counter()
    try:
        await migrate_clickhouse(ch)
        for offset in range(0, args.rows, CHUNK):
            sql = _insert_sql(offset, min(CHUNK, args.rows - offset), args.rows, args.base_ms)
            await ch.command(sql, workload=Workload.INGESTION, settings=long)
        inserted = time.perf_counter()
        await ch.command("OPTIMIZE TABLE observations FINAL", workload=Workload.INGESTION, settings=long)
        parts = await ch.query(
            "SELECT count() AS parts, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, "
            "sum(data_uncompressed_bytes) AS uncompressed FROM system.parts "
            "WHERE database = currentDatabase() AND table = 'observations' AND active",
            workload=Workload.INGESTION,
        )
    finally:
        ch.close()
    _report(
        {
            **{k: int(v) for k, v in parts[0].items()},
            "insert_s": inserted - started,
            "optimize_s": time.perf_counter() - inserted,
        }
    )


def _data_window(base_ms: int) -> ExportWindow:
    start = from_ms(base_ms)
    return ExportWindow(start, start + WINDOW)


def _bare(args: argparse.Namespace) -> None:
    settings = load_settings(data_dir=args.scratch)
    row_group_rows = args.row_group_rows or settings.export_parquet_row_group_size
    ch = ClickHouse.from_settings(settings)
    ch.backend(Workload.EXPORT).query_arrow("SELECT 1", None, ch.settings_for(Workload.EXPORT))
    before = _rss()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    path = args.run_dir / "observations.parquet"
    arrow_bytes = 0

    def counted(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        nonlocal arrow_bytes
        for batch in batches:
            arrow_bytes += batch.nbytes
            yield batch

    started, cpu = time.perf_counter(), _cpu_s()
    batches = ch.stream_blocking(
        TABLES["observations"].window_query(),
        window_params(PROJECT, _data_window(args.base_ms)),
        workload=Workload.EXPORT,
        batch_rows=row_group_rows,
    )
    with closing(batches):  # type: ignore[type-var]
        written = write_batches(
            counted(batches),
            lambda: open(path, "wb"),  # noqa: SIM115 - entered by write_batches
            FileFormat("PARQUET", False),
            row_group_rows=row_group_rows,
        )
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    ch.close()
    _report(
        {
            "mode": "bare",
            "rows": written.rows if written else 0,
            "seconds": seconds,
            "cpu_s": cpu,
            "parquet_bytes": path.stat().st_size if path.exists() else 0,
            "arrow_bytes": arrow_bytes,
            "row_group_rows": row_group_rows,
            "rss_before_mib": before["rss_mib"],
            **_rss(),
        }
    )


async def _job(args: argparse.Namespace) -> None:
    configure_logging("warning")  # structlog would otherwise print every event to stdout
    settings = load_settings(data_dir=args.scratch)
    row_group_rows = args.row_group_rows or settings.export_parquet_row_group_size
    ch = ClickHouse.from_settings(settings)
    ch.backend(Workload.EXPORT).query_arrow("SELECT 1", None, ch.settings_for(Workload.EXPORT))
    args.run_dir.mkdir(parents=True, exist_ok=True)
    metadata = MetadataDB(f"sqlite:///{args.run_dir / 'metadata.db'}")
    metadata.migrate()
    create_project(metadata, "bench export", PROJECT)
    box = SecretBox(None)
    upsert_integration(
        metadata,
        box,
        IntegrationRequest.model_validate(
            {
                "projectId": PROJECT,
                "type": "LOCAL",
                "bucketName": "bench",
                "exportFrequency": "hourly",
                "fileType": "PARQUET",
                "exportMode": "FULL_HISTORY",
            }
        ),
    )
    config = dataclasses.replace(
        ExportConfig.from_settings(settings),
        lag=timedelta(seconds=1),
        min_window=timedelta(seconds=60),
        row_group_rows=row_group_rows,
        trace_only_projects=frozenset(),
        data_dir=args.run_dir,
    )
    job = ExportJob(
        clickhouse=ch,
        metadata=metadata,
        box=box,
        config=config,
        metrics=Metrics(),
        clock=lambda: datetime.now(UTC) + timedelta(days=1),
    )
    before = _rss()
    runs: list[dict[str, Any]] = []
    started, cpu = time.perf_counter(), _cpu_s()
    while len(runs) < 100:
        run_started = time.perf_counter()
        result = await job.run(PROJECT, owner="bench-export")
        runs.append({**result, "seconds": time.perf_counter() - run_started})
        if "window" not in result:
            break
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    ch.close()
    metadata.dispose()
    exported = args.run_dir / "exports"  # <project>/<bucketName>/ below it (older layouts: <bucketName>/)
    observations = sum(p.stat().st_size for p in exported.rglob("observations/*.parquet"))
    total = sum(p.stat().st_size for p in exported.rglob("*") if p.is_file())
    rows = 0
    for manifest in exported.rglob("manifests/*.json"):
        rows += json.loads(manifest.read_text())["rows"]["observations"]
    _report(
        {
            "mode": "job",
            "rows": rows,
            "seconds": seconds,
            "cpu_s": cpu,
            "parquet_bytes": observations,
            "all_bytes": total,
            "runs": runs,
            "row_group_rows": row_group_rows,
            "rss_before_mib": before["rss_mib"],
            **_rss(),
        }
    )


# --------------------------------------------------------------------------------------------
# The parent: load, measure, summarize
# --------------------------------------------------------------------------------------------
def _child(
    role: str,
    scratch: Path,
    rows: int,
    base_ms: int,
    *,
    row_group_rows: int | None = None,
    run_dir: Path | None = None,
    timeout: float = 3600,
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        role,
        "--scratch",
        str(scratch),
        "--rows",
        str(rows),
        "--base-ms",
        str(base_ms),
    ]
    if row_group_rows:
        command += ["--row-group-rows", str(row_group_rows)]
    if run_dir is not None:
        command += ["--run-dir", str(run_dir)]
    return common.run_child(command, role, marker=RESULT, drop_env=_FOREIGN_ENV, timeout=timeout)


@dataclasses.dataclass
class SizeFigures:
    rows: int
    loaded: dict[str, Any]
    bare: list[dict[str, Any]]
    job: list[dict[str, Any]]

    def seconds(self, mode: str) -> float:
        return statistics.median(r["seconds"] for r in getattr(self, mode))

    def rows_per_s(self, mode: str) -> float:
        return self.rows / self.seconds(mode)

    def parquet_mb_per_s(self, mode: str) -> float:
        return statistics.median(r["parquet_bytes"] for r in getattr(self, mode)) / 1e6 / self.seconds(mode)

    def arrow_mb_per_s(self, mode: str) -> float:
        return self.arrow_bytes / 1e6 / self.seconds(mode)

    @property
    def arrow_bytes(self) -> float:
        return statistics.median(r["arrow_bytes"] for r in self.bare)

    def peak_mib(self, mode: str) -> float:
        return statistics.median(r["hwm_mib"] for r in getattr(self, mode))

    def before_mib(self, mode: str) -> float:
        return statistics.median(r["rss_before_mib"] for r in getattr(self, mode))

    @property
    def ratio(self) -> float:
        return self.rows_per_s("job") / self.rows_per_s("bare")

    @property
    def cpu_ratio(self) -> float:
        """Bare CPU seconds over job CPU seconds: the ratio with other processes' load taken out."""
        return statistics.median(r["cpu_s"] for r in self.bare) / statistics.median(r["cpu_s"] for r in self.job)


def _measure_size(rows: int, rounds: int, row_group_rows: int | None, base_ms: int) -> SizeFigures:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-export-{rows}-", dir="/tmp"))
    try:
        print(f"[{rows:,} rows] loading into {scratch} ...", flush=True)
        loaded = _child("load", scratch, rows, base_ms)
        print(
            f"[{rows:,} rows] loaded in {loaded['insert_s']:.1f}s (+ OPTIMIZE FINAL {loaded['optimize_s']:.1f}s): "
            f"{loaded['rows']:,} rows in {loaded['parts']} parts, {loaded['uncompressed'] / 1e6:,.0f} MB "
            f"uncompressed, {loaded['compressed'] / 1e6:,.0f} MB on disk",
            flush=True,
        )
        if loaded["rows"] != rows:
            raise SystemExit(f"loaded {loaded['rows']} rows, expected {rows}")
        figures = SizeFigures(rows, loaded, [], [])
        for round_no in range(rounds):
            for mode in ("bare", "job") if round_no % 2 == 0 else ("job", "bare"):
                run_dir = scratch / f"run-{mode}-{round_no}"
                result = _child(mode, scratch, rows, base_ms, row_group_rows=row_group_rows, run_dir=run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
                if result["rows"] != rows:
                    raise SystemExit(f"{mode} exported {result['rows']} observations, expected {rows}")
                getattr(figures, mode).append(result)
                extra = f", {len(result['runs'])} job runs" if mode == "job" else ""
                print(
                    f"[{rows:,} rows] round {round_no + 1} {mode}: {result['seconds']:.2f}s "
                    f"({result['cpu_s']:.2f} CPU s), "
                    f"{result['parquet_bytes'] / 1e6:,.0f} MB Parquet, peak RSS {result['hwm_mib']:,.0f} MiB "
                    f"(RSS {result['rss_before_mib']:,.0f} MiB before exporting){extra}",
                    flush=True,
                )
        return figures
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _summary(sizes: list[SizeFigures]) -> dict[str, float | None]:
    """Print the table and the verdicts; return the job's and the bare run's peak RSS growth (%)."""
    first = sizes[0]
    print()
    print(
        f"row group / batch rows: {first.bare[0]['row_group_rows']:,}; "
        f"Arrow bytes per row {first.arrow_bytes / first.rows:,.0f}, Parquet bytes per row "
        f"{statistics.median(r['parquet_bytes'] for r in first.bare) / first.rows:,.0f}"
    )
    header = (
        f"{'rows':>10} | {'job rows/s':>10} {'MB/s pq':>8} {'MB/s arw':>8} | {'bare rows/s':>11} "
        f"{'MB/s pq':>8} {'MB/s arw':>8} | {'ratio':>5} | {'peak job':>8} {'peak bare':>9} (MiB)"
    )
    print(header)
    print("-" * len(header))
    for s in sizes:
        print(
            f"{s.rows:>10,} | {s.rows_per_s('job'):>10,.0f} {s.parquet_mb_per_s('job'):>8.1f} "
            f"{s.arrow_mb_per_s('job'):>8.1f} | {s.rows_per_s('bare'):>11,.0f} {s.parquet_mb_per_s('bare'):>8.1f} "
            f"{s.arrow_mb_per_s('bare'):>8.1f} | {s.ratio:>5.3f} | {s.peak_mib('job'):>8,.0f} "
            f"{s.peak_mib('bare'):>9,.0f}"
        )
    print("(MB/s pq = Parquet bytes written per second; MB/s arw = the query's Arrow batches per second)")
    print()
    ratio_ok = all(s.ratio >= 0.8 for s in sizes)
    print(
        f"ratio job/bare >= 0.8:      {'PASS' if ratio_ok else 'FAIL'} "
        f"({', '.join(f'{s.ratio:.3f}' for s in sizes)}; by CPU time: "
        f"{', '.join(f'{s.cpu_ratio:.3f}' for s in sizes)})"
    )
    growths: dict[str, float | None] = {"job": None, "bare": None}
    if len(sizes) < 2:
        print("peak RSS growth:            not measured (give two sizes)")
        return growths
    last = sizes[-1]
    for mode in ("job", "bare"):
        growth = (last.peak_mib(mode) - first.peak_mib(mode)) / first.peak_mib(mode) * 100
        growths[mode] = growth
        added_first = first.peak_mib(mode) - first.before_mib(mode)
        added_last = last.peak_mib(mode) - last.before_mib(mode)
        verdict = ("PASS" if growth < 20 else "FAIL") if mode == "job" else "(reference)"
        print(
            f"{mode} peak RSS growth:{'' if mode == 'bare' else ' '}      {verdict} {growth:+.1f}% "
            f"({first.peak_mib(mode):,.0f} -> {last.peak_mib(mode):,.0f} MiB for {first.rows:,} -> "
            f"{last.rows:,} rows; above the RSS before exporting: {added_first:,.0f} -> {added_last:,.0f} MiB)"
        )
    return growths


def _record(recorder: common.Recorder, args: argparse.Namespace, sizes: list[SizeFigures], growths: dict) -> None:
    per_size = {
        str(s.rows): {
            "loaded": s.loaded,
            "arrow_bytes": s.arrow_bytes,
            "ratio_job_over_bare": s.ratio,
            "cpu_ratio_bare_over_job": s.cpu_ratio,
            **{
                mode: {
                    "seconds": s.seconds(mode),
                    "rows_per_s": s.rows_per_s(mode),
                    "parquet_mb_per_s": s.parquet_mb_per_s(mode),
                    "arrow_mb_per_s": s.arrow_mb_per_s(mode),
                    "peak_rss_mib": s.peak_mib(mode),
                    "rss_before_mib": s.before_mib(mode),
                    "rounds": [{k: v for k, v in r.items() if k != "runs"} for r in getattr(s, mode)],
                }
                for mode in ("job", "bare")
            },
        }
        for s in sizes
    }
    ratios: dict[str, float | None] = {f"job_over_bare_rows_per_s_{s.rows}": s.ratio for s in sizes}
    ratios.update({f"cpu_bare_over_job_{s.rows}": s.cpu_ratio for s in sizes})
    lowest = min(sizes, key=lambda s: s.ratio)
    first, last = sizes[0], sizes[-1]
    recorder.write(
        parameters={
            "sizes": [s.rows for s in sizes],
            "rounds": args.rounds,
            "row_group_rows": first.bare[0]["row_group_rows"],
        },
        figures={
            "sizes": per_size,
            "job_peak_rss_growth_pct": growths["job"],
            "bare_peak_rss_growth_pct": growths["bare"],
        },
        ratios=ratios,
        targets=[
            common.target(
                "export: job vs bare pipeline",
                lowest.ratio,
                ">=",
                0.8,
                "ratio",
                f"rows/s of ExportJob over the same query -> Parquet without job machinery; "
                f"lowest over the sizes ({lowest.rows:,} rows)",
            ),
            common.target(
                "export: job peak RSS growth",
                growths["job"],
                "<",
                20,
                "%",
                f"peak RSS (VmHWM) from {first.rows:,} to {last.rows:,} rows ({last.rows / first.rows:.1f}x data)",
            ),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,2000000", help="observation counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per size and mode (median)")
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=None,
        help="Parquet row group and batch rows (default: "
        "LANGFUSE_CLICKHOUSE_DATA_EXPORT_PARQUET_ROW_GROUP_SIZE, 50,000)",
    )
    common.add_options(parser)
    # Internal: how the parent starts its loader and measuring processes.
    parser.add_argument("--role", choices=("main", "load", "bare", "job"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base-ms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "load":
        asyncio.run(_load(args))
        return
    if args.role == "bare":
        _bare(args)
        return
    if args.role == "job":
        asyncio.run(_job(args))
        return

    common.apply_quick(parser, args, {"sizes": "20000,40000"})
    recorder = common.Recorder("export", args)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    free = shutil.disk_usage(tempfile.gettempdir()).free
    needed = max(sizes) * 2_000  # ~0.5 KB/row stored + ~0.5 KB/row per Parquet file, with room to spare
    if free < needed:
        raise SystemExit(
            f"{free / 1e9:.1f} GB free under /tmp, need about {needed / 1e9:.1f} GB for {max(sizes):,} rows"
        )
    # All event_ts fall in the 15-minute window that starts here; the job's clock runs a day ahead,
    # so every row is behind its horizon.
    base_ms = int(floor_to(datetime.now(UTC) - timedelta(days=1), WINDOW).timestamp() * 1000)
    started = time.perf_counter()
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
        "(other work on the machine slows both modes, and not equally; see the CPU-time ratio)",
        flush=True,
    )
    figures = [_measure_size(rows, args.rounds, args.row_group_rows, base_ms) for rows in sizes]
    growths = _summary(figures)
    print(
        f"\ntotal bench time {time.perf_counter() - started:.0f}s; load average at the end: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    _record(recorder, args, figures, growths)


if __name__ == "__main__":
    main()
