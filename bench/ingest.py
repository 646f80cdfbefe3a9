"""End-to-end ingestion throughput: synth -> HTTP -> raw batch -> queue -> merge -> verified rows.

    .venv/bin/python bench/ingest.py [--traces 20000] [--concurrency 4] [--redis URL]
                                     [--topologies serve,single-process]
                                     [--quick] [--results-dir DIR] [--no-record]

For each of --topologies (default: `serve`, the supervised engine + web + workers, then
`serve --single-process`, everything in one process), one after the other in the same run:
starts `tracehouse serve` on embedded defaults in a scratch directory, sends `--traces` synthetic
traces (10 events each with the default shape, so 20,000 traces = 200,000 events) and measures:
- sustained end-to-end events/s: first request sent -> every job completed (a job completes only
  after its rows are verified present in ClickHouse);
- API latency p50/p95 per 100-event batch, under that load;
- the physical limit in the same run: the same final rows inserted straight into a fresh chDB as
  Arrow (no HTTP, no queue, no merge), and the ratio of the two.
Targets (on the first topology): >= 5,000 events/s end to end, p95 < 150 ms; the other topologies'
figures go to figures.topologies, with their events/s ratio to the first. Figures go to
bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


COUNT_ROWS = r"""
import json, sys, chdb
src = chdb.connect(sys.argv[1])
tables = ("traces", "observations", "scores")
rows = {t: int(src.query(f"SELECT count() FROM {t} FINAL", "CSV").data().strip()) for t in tables}
src.close()
print(json.dumps(rows))
"""


def _final_rows(clickhouse_dir: Path) -> int:
    """Rows in the stopped server's chDB folder (the web's /metrics has no writer counters once the
    workers are their own processes, as under the supervised `serve`)."""
    done = subprocess.run(
        [sys.executable, "-c", COUNT_ROWS, str(clickhouse_dir)], capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return sum(json.loads(done.stdout.strip().splitlines()[-1]).values())


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
    parser.add_argument(
        "--topologies",
        default="serve,single-process",
        help="comma-separated, measured one after the other in this run: serve (supervised engine, web and "
        "workers; the targets) and single-process (serve --single-process)",
    )
    common.add_options(parser)
    args = parser.parse_args()
    common.apply_quick(parser, args, {"traces": 300})
    recorder = common.Recorder("ingest", args)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        await _run(args, work, recorder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


TOPOLOGIES = {"serve": (), "single-process": ("--single-process",)}  # name -> extra `serve` arguments


async def _measure(topology: str, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """One topology: start `serve`, send the traces, wait until every job is verified; its figures."""
    env = {
        **os.environ,
        "TRACEHOUSE_DATA_DIR": str(data_dir),
        "LANGFUSE_INIT_PROJECT_ID": "bench",
        "LANGFUSE_INIT_PROJECT_PUBLIC_KEY": "pk-lf-bench",
        "LANGFUSE_INIT_PROJECT_SECRET_KEY": "sk-lf-bench",
        "TRACEHOUSE_LOG_LEVEL": "warning",
        "REDIS_KEY_PREFIX": f"bench{os.getpid()}-{topology}",
    }
    if args.redis:
        env["REDIS_URL"] = args.redis
    serve = subprocess.Popen(
        [sys.executable, "-m", "tracehouse", "serve", "--port", str(args.port), *TOPOLOGIES[topology]],
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
        print(
            f"[{topology}] sending {events:,} events ({args.traces:,} traces) "
            f"with {args.concurrency} requests in flight ..."
        )
        started = time.perf_counter()
        stats = await send(base, "pk-lf-bench", "sk-lf-bench", config, concurrency=args.concurrency, prepared=bodies)
        accepted = time.perf_counter()
        done = await _wait_drained(base, stats.batches)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    rows = _final_rows(data_dir / "clickhouse")
    e2e_seconds = done - started
    accepted_seconds = accepted - started
    figures = {
        "events": stats.events,
        "batches": stats.batches,
        "rejected": stats.rejected,
        "accepted_seconds": accepted_seconds,
        "accepted_events_per_s": stats.events / accepted_seconds,
        "end_to_end_seconds": e2e_seconds,
        "end_to_end_events_per_s": stats.events / e2e_seconds,
        "final_rows": rows,
        "end_to_end_final_rows_per_s": rows / e2e_seconds,
        "api_p50_ms": stats.median_ms,
        "api_p95_ms": stats.percentile(0.95),
    }
    print(
        f"[{topology}] accepted over HTTP:    {stats.events:,} events in {accepted_seconds:.1f}s "
        f"({stats.events / accepted_seconds:,.0f} events/s), rejected {stats.rejected}"
    )
    print(
        f"[{topology}] end to end (verified): {stats.events / e2e_seconds:,.0f} events/s, "
        f"{rows / e2e_seconds:,.0f} final rows/s over {e2e_seconds:.1f}s (target >= 5,000 events/s)"
    )
    print(
        f"[{topology}] API latency per batch: p50 {stats.median_ms:.1f} ms, p95 {stats.percentile(0.95):.1f} ms "
        f"({config.batch_events} events, {args.concurrency} in flight; target p95 < 150 ms)"
    )
    return {"figures": figures, "events": events, "config": config}


async def _run(args: argparse.Namespace, work: Path, recorder: common.Recorder) -> None:
    topologies = [t.strip() for t in args.topologies.split(",") if t.strip()]
    unknown = sorted(set(topologies) - set(TOPOLOGIES))
    if unknown or not topologies:
        raise SystemExit(f"unknown topologies {unknown} (known: {', '.join(TOPOLOGIES)})")
    measured = {name: await _measure(name, args, work / name) for name in topologies}
    first = topologies[0]  # the targets, and the top-level figures, are the first topology's
    raw = subprocess.run(
        [sys.executable, "-c", RAW_INSERT, str(work / first / "clickhouse"), str(work / "raw")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if raw.returncode != 0:
        raise SystemExit(raw.stderr[-2000:])
    raw_result = json.loads(raw.stdout.strip().splitlines()[-1])
    raw_rows_per_s = raw_result["rows"] / raw_result["seconds"]
    print(
        f"raw chDB Arrow insert:    {raw_result['rows']:,} rows in {raw_result['seconds']:.2f}s "
        f"({raw_rows_per_s:,.0f} rows/s, 1,000-row inserts)"
    )
    ratios: dict[str, float | None] = {}
    for name in topologies:
        ratio = measured[name]["figures"]["end_to_end_final_rows_per_s"] / raw_rows_per_s
        key = "end_to_end_over_raw_insert_rows_per_s" + ("" if name == first else f" ({name})")
        ratios[key] = ratio
        print(f"ratio end-to-end/raw:     {ratio:.3f} ({name}: final rows/s vs raw rows/s)")
    for name in topologies[1:]:
        ratio = (
            measured[name]["figures"]["end_to_end_events_per_s"] / measured[first]["figures"]["end_to_end_events_per_s"]
        )
        ratios[f"end_to_end_events_per_s {name} / {first}"] = ratio
        print(f"{name} / {first}: x{ratio:.2f} end-to-end events/s (same run)")
    figures = measured[first]["figures"]
    config = measured[first]["config"]
    recorder.write(
        parameters={
            "traces": args.traces,
            "concurrency": args.concurrency,
            "batch_events": config.batch_events,
            "spans_per_trace": config.spans_per_trace,
            "events": measured[first]["events"],
            "redis": common.redact_url(args.redis),
            "topologies": topologies,
        },
        figures={
            **figures,
            "raw_insert_rows": raw_result["rows"],
            "raw_insert_seconds": raw_result["seconds"],
            "raw_insert_rows_per_s": raw_rows_per_s,
            "topologies": {name: m["figures"] for name, m in measured.items()},
        },
        ratios=ratios,
        targets=[
            common.target(
                "ingest: end-to-end events/s",
                figures["end_to_end_events_per_s"],
                ">=",
                5000,
                "events/s",
                f"{first}: first request sent -> every job completed with its rows verified in ClickHouse",
            ),
            common.target(
                "ingest: API p95 per 100-event batch",
                figures["api_p95_ms"],
                "<",
                150,
                "ms",
                f"{first}: POST /api/public/ingestion latency, {config.batch_events} events, "
                f"{args.concurrency} in flight",
            ),
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
