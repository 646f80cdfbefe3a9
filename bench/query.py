"""Read API latency on a large embedded store.

    .venv/bin/python bench/query.py [--traces 1000000] [--observations-per-trace 5] [--samples 100]
                                    [--quick] [--results-dir DIR] [--no-record]

Loads N traces with ~5 observations each (Arrow inserts straight into chDB, not the API) into a
scratch data directory, starts `tracehouse web` on it as its own process, and from this process
(the client) prints p50/p95 of: trace by id, list
first page without and with filters, observations of a trace, sessions page. Goals on this
2-core machine: trace by id p95 < 50 ms, filtered list p95 < 250 ms (printed; not yet recorded
as targets: bench/results/query.json holds every p50/p95 as informational figures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa

from tracehouse.clickhouse import Workload
from tracehouse.metadata import create_api_key, create_project
from tracehouse.runtime import migrate, open_services
from tracehouse.settings import load_settings

if __package__:  # python -m bench.query
    from bench import common
else:  # python bench/query.py: bench/ is on sys.path
    import common

PROJECT = "bench-query"
CHUNK = 100_000
START_MS = 1_790_000_000_000  # spread over ~30 days from here


def _ids(prefix: str, start: int, count: int) -> pa.Array:
    return pa.array([f"{prefix}{i:08d}" for i in range(start, start + count)])


def trace_chunk(start: int, count: int, rng: np.random.Generator) -> pa.Table:
    stamps = START_MS + np.sort(rng.integers(0, 30 * 86_400_000, count))
    users = rng.integers(0, 10_000, count)
    sessions = rng.integers(0, 100_000, count)
    names = np.array(["chat", "rag", "agent", "summarize"])[rng.integers(0, 4, count)]
    envs = np.array(["production", "staging"])[rng.integers(0, 2, count)]
    text = "x" * 200
    return pa.table(
        {
            "id": _ids("t", start, count),
            "project_id": pa.array([PROJECT] * count),
            "timestamp": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
            "name": pa.array(names),
            "user_id": pa.array([f"user-{u}" for u in users]),
            "session_id": pa.array([f"s-{s}" for s in sessions]),
            "environment": pa.array(envs),
            "tags": pa.array([["beta"] if u % 3 == 0 else [] for u in users]),
            "metadata": pa.array([[("plan", "pro")]] * count, pa.map_(pa.string(), pa.string())),
            "input": pa.array([text] * count),
            "output": pa.array([text] * count),
            "created_at": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
            "event_ts": pa.array(stamps, pa.timestamp("ms", tz="UTC")),
            "is_deleted": pa.array([0] * count, pa.uint8()),
        }
    )


def observation_chunk(
    start: int, count: int, per_trace: int, rng: np.random.Generator, trace_stamps: np.ndarray
) -> pa.Table:
    n = count * per_trace
    trace_index = np.repeat(np.arange(start, start + count), per_trace)
    offsets = rng.integers(0, 5_000, n)
    starts = np.repeat(trace_stamps, per_trace) + offsets
    kinds = np.array(["SPAN", "GENERATION"])[np.arange(n) % 2]
    return pa.table(
        {
            "id": _ids("o", start * per_trace, n),
            "trace_id": pa.array([f"t{i:08d}" for i in trace_index]),
            "project_id": pa.array([PROJECT] * n),
            "type": pa.array(kinds),
            "name": pa.array(["step"] * n),
            "start_time": pa.array(starts, pa.timestamp("ms", tz="UTC")),
            "end_time": pa.array(starts + rng.integers(10, 3_000, n), pa.timestamp("ms", tz="UTC")),
            "level": pa.array(["DEFAULT"] * n),
            "input": pa.array(["y" * 150] * n),
            "usage_details": pa.array(
                [[("input", 100), ("output", 20), ("total", 120)]] * n, pa.map_(pa.string(), pa.uint64())
            ),
            "created_at": pa.array(starts, pa.timestamp("ms", tz="UTC")),
            "event_ts": pa.array(starts, pa.timestamp("ms", tz="UTC")),
            "is_deleted": pa.array([0] * n, pa.uint8()),
        }
    )


async def load(services, traces: int, per_trace: int) -> float:
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    for start in range(0, traces, CHUNK):
        count = min(CHUNK, traces - start)
        chunk = trace_chunk(start, count, rng)
        await services.clickhouse.insert_arrow("traces", chunk, workload=Workload.INGESTION)
        stamps = chunk.column("timestamp").cast(pa.int64()).to_numpy()
        await services.clickhouse.insert_arrow(
            "observations", observation_chunk(start, count, per_trace, rng, stamps), workload=Workload.INGESTION
        )
        print(f"  loaded {start + count:,} traces", flush=True)
    return time.perf_counter() - started


async def measure(client: httpx.AsyncClient, samples: int, make_path) -> list[float]:
    timings = []
    for i in range(samples):
        path, params = make_path(i)
        started = time.perf_counter()
        response = await client.get(path, params=params)
        timings.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"{path} {params} -> {response.status_code}: {response.text[:300]}")
    return timings


def report(name: str, timings: list[float], target: float | None = None) -> dict[str, float]:
    ordered = sorted(timings)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    p50 = statistics.median(timings)
    verdict = "" if target is None else f"  (target p95 < {target:.0f} ms: {'met' if p95 < target else 'NOT met'})"
    print(f"{name:<34} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{verdict}")
    return {"p50_ms": p50, "p95_ms": p95, "samples": len(timings)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--observations-per-trace", type=int, default=5)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--port", type=int, default=3918)
    common.add_options(parser)
    args = parser.parse_args()
    common.apply_quick(parser, args, {"traces": 2000, "samples": 20})
    recorder = common.Recorder("query", args)
    scratch = Path(tempfile.mkdtemp(prefix="bench-query-"))
    try:
        await _run(args, scratch, recorder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _run(args: argparse.Namespace, scratch: Path, recorder: common.Recorder) -> None:
    settings = load_settings(data_dir=scratch)
    services = await open_services(settings)
    await migrate(services)
    project = create_project(services.metadata, "bench", project_id=PROJECT)
    key = create_api_key(services.metadata, project.id, salt=settings.salt)
    print(f"loading {args.traces:,} traces x {args.observations_per_trace} observations ...")
    seconds = await load(services, args.traces, args.observations_per_trace)
    rows = args.traces * (1 + args.observations_per_trace)
    print(f"loaded {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s)")
    # Background merges of the fresh parts compete for the 2 cores; measure once they settle.
    settle_started = time.perf_counter()
    while time.perf_counter() - settle_started < 180:
        merging = await services.clickhouse.query(
            "SELECT count() AS n FROM system.merges", workload=Workload.INTERACTIVE
        )
        if merging[0]["n"] == 0:
            break
        await asyncio.sleep(1)
    parts = await services.clickhouse.query(
        "SELECT table, count() AS n FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table IN ('traces', 'observations') GROUP BY table ORDER BY table",
        workload=Workload.INTERACTIVE,
    )
    settle_seconds = time.perf_counter() - settle_started
    print(
        f"merges settled after {settle_seconds:.0f}s; active parts: "
        + ", ".join(f"{p['table']} {p['n']}" for p in parts)
    )
    await services.close()  # chDB allows one process per data directory: hand it to the server

    # The server is a real `tracehouse web` process; this process is only the client.
    env = {
        **os.environ,
        "TRACEHOUSE_DATA_DIR": str(settings.data_dir),
        "TRACEHOUSE_LOG_LEVEL": "warning",
        "TRACEHOUSE_WORKER_PORT": "0",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tracehouse", "web", "--port", str(args.port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    token = base64.b64encode(f"{key.public_key}:{key.secret_key}".encode()).decode()
    rng = random.Random(1)
    trace_ids = [f"t{rng.randrange(args.traces):08d}" for _ in range(args.samples)]
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{args.port}", timeout=60, headers={"Authorization": f"Basic {token}"}
        ) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if (await client.get("/api/public/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"tracehouse web did not start: {server.stderr.read() if server.stderr else ''}")
                await asyncio.sleep(0.2)
            await client.get("/api/public/traces", params={"limit": 1})  # warm-up
            endpoints: dict[str, dict[str, float]] = {}
            endpoints["trace_by_id"] = report(
                "trace by id",
                await measure(client, args.samples, lambda i: (f"/api/public/traces/{trace_ids[i]}", {})),
                50,
            )
            endpoints["list_traces_first_page"] = report(
                "list traces, first page",
                await measure(client, args.samples, lambda i: ("/api/public/traces", {"limit": 50})),
            )
            endpoints["list_traces_filtered"] = report(
                "list traces, filtered",
                await measure(
                    client,
                    args.samples,
                    lambda i: (
                        "/api/public/traces",
                        {"limit": 50, "userId": f"user-{rng.randrange(10_000)}", "environment": "production"},
                    ),
                ),
                250,
            )
            endpoints["observations_of_a_trace"] = report(
                "observations of a trace",
                await measure(client, args.samples, lambda i: ("/api/public/observations", {"traceId": trace_ids[i]})),
            )
            endpoints["sessions_page"] = report(
                "sessions page",
                await measure(client, max(10, args.samples // 5), lambda i: ("/api/public/sessions", {"limit": 50})),
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    labels = {
        "trace_by_id": "trace by id",
        "list_traces_first_page": "list traces, first page",
        "list_traces_filtered": "list traces, filtered",
        "observations_of_a_trace": "observations of a trace",
        "sessions_page": "sessions page",
    }
    recorder.write(
        parameters={
            "traces": args.traces,
            "observations_per_trace": args.observations_per_trace,
            "samples": args.samples,
        },
        figures={
            "loaded_rows": rows,
            "load_seconds": seconds,
            "load_rows_per_s": rows / seconds,
            "merge_settle_seconds": settle_seconds,
            "active_parts": {p["table"]: int(p["n"]) for p in parts},
            "endpoints": endpoints,
        },
        ratios={},
        targets=[],
        informational=[
            common.info(f"query: {labels[key]} {q}", figures[f"{q}_ms"], "ms", group=labels[key], series=q)
            for key, figures in endpoints.items()
            for q in ("p50", "p95")
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
