"""End-to-end ingestion throughput: synth -> HTTP -> raw batch -> queue -> merge -> verified rows.

    .venv/bin/python bench/ingest.py [--traces 20000] [--concurrency 4] [--redis URL]
                                     [--quick] [--results-dir DIR] [--no-record]

Starts `tracehouse serve` on embedded defaults in a scratch directory, sends `--traces` synthetic
traces (10 events each with the default shape, so 20,000 traces = 200,000 events) and measures:
- sustained end-to-end events/s: first request sent -> every job completed (a job completes only
  after its rows are verified present in ClickHouse);
- API latency p50/p95 per 100-event batch, under that load;
- the physical limit in the same run: the same final rows inserted straight into a fresh chDB as
  Arrow (no HTTP, no queue, no merge), and the ratio of the two.
Targets: >= 5,000 events/s end to end, p95 < 150 ms. Figures go to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tracehouse.synth import SynthConfig, events_per_trace, prepare, send

if __package__:  # python -m bench.ingest
    from bench import common
else:  # python bench/ingest.py: bench/ is on sys.path
    import common

RAW_INSERT = r"""
import json, sys, time, chdb, pyarrow as pa, asyncio
from tracehouse.clickhouse import ClickHouse, migrate_clickhouse, Workload
from tracehouse.settings import load_settings
source, target = sys.argv[1], sys.argv[2]
src = chdb.connect(source)
tables = {t: src.query(f"SELECT * FROM {t} FINAL", "ArrowTable") for t in ("traces", "observations", "scores")}
src.close()
async def main():
    ch = ClickHouse.from_settings(load_settings(data_dir=target))
    await migrate_clickhouse(ch)
    rows = sum(t.num_rows for t in tables.values())
    started = time.perf_counter()
    for name, table in tables.items():
        for chunk in table.to_batches(max_chunksize=1000):
            await ch.insert_arrow(name, pa.Table.from_batches([chunk]), workload=Workload.INGESTION)
    elapsed = time.perf_counter() - started
    print(json.dumps({"rows": rows, "seconds": elapsed}))
asyncio.run(main())
"""


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _wait_drained(base: str, batches: int, timeout: float = 900) -> float:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            counts = (await client.get("/api/health/queue")).json()["details"]["queue_counts"]["ingestion-queue"]
            if counts["completed"] >= batches and counts["waiting"] + counts["active"] + counts["delayed"] == 0:
                return time.perf_counter()
            await asyncio.sleep(0.05)
    raise TimeoutError("ingestion did not drain")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--port", type=int, default=3917)
    parser.add_argument("--redis", default=None, help="REDIS_URL for serve (default: embedded)")
    common.add_options(parser)
    args = parser.parse_args()
    common.apply_quick(parser, args, {"traces": 300})
    recorder = common.Recorder("ingest", args)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        await _run(args, work, recorder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _run(args: argparse.Namespace, work: Path, recorder: common.Recorder) -> None:
    env = {
        **os.environ,
        "TRACEHOUSE_DATA_DIR": str(work / "data"),
        "LANGFUSE_INIT_PROJECT_ID": "bench",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-lf-bench",
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk-lf-bench",
        "TRACEHOUSE_LOG_LEVEL": "warning",
        "REDIS_KEY_PREFIX": f"bench{os.getpid()}",
    }
    if args.redis:
        env["REDIS_URL"] = args.redis
    serve = subprocess.Popen(
        [sys.executable, "-m", "tracehouse", "serve", "--port", str(args.port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{args.port}"
    try:
        for line in serve.stdout:  # type: ignore[union-attr]
            if "Press Ctrl-C" in line:
                break
        config = SynthConfig(traces=args.traces, batch_events=100)
        events = args.traces * events_per_trace(config.spans_per_trace)
        bodies = prepare(config)  # generated before the clock starts: the generator shares our 2 cores
        print(f"sending {events:,} events ({args.traces:,} traces) with {args.concurrency} requests in flight ...")
        started = time.perf_counter()
        stats = await send(base, "pk-lf-bench", "sk-lf-bench", config, concurrency=args.concurrency, prepared=bodies)
        accepted = time.perf_counter()
        done = await _wait_drained(base, stats.batches)
        metrics = httpx.get(f"{base}/metrics").text
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    rows = sum(
        _metric(metrics, "ingestion_rows_written_total", f'{{table="{t}"}}')
        for t in ("traces", "observations", "scores")
    )
    raw = subprocess.run(
        [sys.executable, "-c", RAW_INSERT, str(work / "data" / "clickhouse"), str(work / "raw")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if raw.returncode != 0:
        raise SystemExit(raw.stderr[-2000:])
    raw_result = json.loads(raw.stdout.strip().splitlines()[-1])
    e2e_seconds = done - started
    raw_rows_per_s = raw_result["rows"] / raw_result["seconds"]
    print(
        f"accepted over HTTP:       {stats.events:,} events in {accepted - started:.1f}s "
        f"({stats.events / (accepted - started):,.0f} events/s), rejected {stats.rejected}"
    )
    print(
        f"end to end (verified):    {stats.events / e2e_seconds:,.0f} events/s, "
        f"{rows / e2e_seconds:,.0f} final rows/s over {e2e_seconds:.1f}s (target >= 5,000 events/s)"
    )
    print(
        f"API latency per batch:    p50 {stats.median_ms:.1f} ms, p95 {stats.percentile(0.95):.1f} ms "
        f"({config.batch_events} events, {args.concurrency} in flight; target p95 < 150 ms)"
    )
    print(
        f"raw chDB Arrow insert:    {raw_result['rows']:,} rows in {raw_result['seconds']:.2f}s "
        f"({raw_rows_per_s:,.0f} rows/s, 1,000-row inserts)"
    )
    ratio = (rows / e2e_seconds) / raw_rows_per_s
    print(f"ratio end-to-end/raw:     {ratio:.3f} (final rows/s vs raw rows/s)")
    accepted_seconds = accepted - started
    e2e_events_per_s = stats.events / e2e_seconds
    p95 = stats.percentile(0.95)
    recorder.write(
        parameters={
            "traces": args.traces,
            "concurrency": args.concurrency,
            "batch_events": config.batch_events,
            "spans_per_trace": config.spans_per_trace,
            "events": events,
            "redis": common.redact_url(args.redis),
        },
        figures={
            "events": stats.events,
            "batches": stats.batches,
            "rejected": stats.rejected,
            "accepted_seconds": accepted_seconds,
            "accepted_events_per_s": stats.events / accepted_seconds,
            "end_to_end_seconds": e2e_seconds,
            "end_to_end_events_per_s": e2e_events_per_s,
            "final_rows": rows,
            "end_to_end_final_rows_per_s": rows / e2e_seconds,
            "api_p50_ms": stats.median_ms,
            "api_p95_ms": p95,
            "raw_insert_rows": raw_result["rows"],
            "raw_insert_seconds": raw_result["seconds"],
            "raw_insert_rows_per_s": raw_rows_per_s,
        },
        ratios={"end_to_end_over_raw_insert_rows_per_s": ratio},
        targets=[
            common.target(
                "ingest: end-to-end events/s",
                e2e_events_per_s,
                ">=",
                5000,
                "events/s",
                "first request sent -> every job completed with its rows verified in ClickHouse",
            ),
            common.target(
                "ingest: API p95 per 100-event batch",
                p95,
                "<",
                150,
                "ms",
                f"POST /api/public/ingestion latency, {config.batch_events} events, {args.concurrency} in flight",
            ),
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
