"""Run every benchmark, each in its own process, then draw bench/results/latest.png.

    .venv/bin/python -m bench.run_all                     # all, modest sizes (about 37 minutes on 2 idle cores)
    .venv/bin/python -m bench.run_all --quick             # all, tiny sizes: a smoke run of the whole chain
    .venv/bin/python -m bench.run_all ingest query        # a subset (also: --skip export,query)
    .venv/bin/python -m bench.run_all --list              # what would run, with the arguments

Each script writes bench/results/<name>.json (bench/results/quick/ for --quick); the chart is drawn
from whatever results are in that folder, so a subset run redraws it with the others' last figures.
Exits 1 when a benchmark fails to run (a missed target is not a failure: it is in the results).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__:  # python -m bench.run_all
    from bench import chart, common
else:  # python bench/run_all.py: bench/ is on sys.path
    import chart
    import common


@dataclass(frozen=True)
class Benchmark:
    name: str
    full: tuple[str, ...]  # modest sizes: the run finishes in minutes on a 2-core machine
    estimate_s: int  # rough wall time of the full run on this 2-core machine, for the plan
    takes_redis: bool = False


# In the order they run (common.ORDER, which the chart follows): cheapest first, so a broken setup shows up early.
BENCHMARKS = (
    Benchmark("queue_throughput", ("--jobs", "10000", "--rounds", "3"), 60, takes_redis=True),
    Benchmark("ingest", ("--traces", "20000"), 180, takes_redis=True),  # serve, then --single-process
    # Two rounds: each mode once first and once second, so neither always gets the warm cache.
    Benchmark("export", ("--sizes", "1000000,2000000", "--rounds", "2"), 450),
    # ~13 min on 2 idle cores at these sizes (5 formats x 2 modes x 2 rounds, each in a fresh process).
    Benchmark("batch_export", ("--sizes", "100000,200000", "--rounds", "2"), 1200),
    Benchmark("query", ("--traces", "1000000"), 390),
    # Three topologies x four phases (idle, ingestion, catch-up export, both) on 200k traces.
    Benchmark("isolation", ("--traces", "200000"), 1200, takes_redis=True),
)
BY_NAME = {b.name: b for b in BENCHMARKS}


def _command(bench: Benchmark, args: argparse.Namespace, results_dir: Path) -> list[str]:
    command = [sys.executable, str(common.BENCH_DIR / f"{bench.name}.py")]
    command += ["--quick"] if args.quick else list(bench.full)
    if args.redis and bench.takes_redis:
        command += ["--redis", args.redis]
    if args.results_dir is not None:
        command += ["--results-dir", str(results_dir)]
    return command


def _shown(command: list[str]) -> str:
    return " ".join([_relative(Path(command[1])), *command[2:]])


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "names",
        nargs="*",
        type=_names,
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BY_NAME)})",
    )
    parser.add_argument(
        "--skip", action="append", type=_names, default=[], metavar="NAME[,NAME]", help="leave these out (repeatable)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (each script's --quick): a smoke run")
    parser.add_argument("--redis", default=None, help="REDIS_URL for the benchmarks that take one (default: embedded)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: bench/results (quick: .../quick)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark before it is killed")
    parser.add_argument("--no-chart", action="store_true", help="do not redraw latest.png")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args()
    args.names = [n for group in args.names for n in group]
    args.skip = [n for group in args.skip for n in group]
    unknown = [n for n in [*args.names, *args.skip] if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    chosen = [b for b in BENCHMARKS if (not args.names or b.name in args.names) and b.name not in args.skip]
    results_dir = common.results_dir(args)
    plan = [(b, _command(b, args, results_dir)) for b in chosen]

    estimate = sum(b.estimate_s for b in chosen)
    print(f"{'quick' if args.quick else 'full'} run of {len(plan)} benchmark(s) -> {_relative(results_dir)}/")
    for bench, command in plan:
        print(
            f"  {bench.name:<17} {_shown(command)}" + ("" if args.quick else f"  (~{round(bench.estimate_s / 60)} min)")
        )
    if not args.quick:
        print(f"  estimated total: ~{estimate / 60:.0f} min on 2 idle cores (up to twice that on a busy machine)")
    if args.list:
        return 0

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    outcomes: list[tuple[str, int, float]] = []
    for bench, command in plan:
        print(f"\n=== {bench.name}: {_shown(command)}", flush=True)
        started = time.perf_counter()
        try:
            code = subprocess.run(command, cwd=common.REPO_DIR, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            print(f"{bench.name} killed after {args.timeout:.0f}s", flush=True)
            code = -1
        outcomes.append((bench.name, code, time.perf_counter() - started))

    failed = [name for name, code, _ in outcomes if code != 0]
    print("\n=== summary")
    for name, code, seconds in outcomes:
        print(f"  {name:<17} {'ok' if code == 0 else f'FAILED (exit {code})':<16} {seconds:6.0f}s")
    print(f"  total {sum(s for _, _, s in outcomes):.0f}s")
    for result in common.load_results(results_dir):
        if result["benchmark"] not in {b.name for b in chosen}:
            continue
        for t in result["targets"]:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
            print(f"  {t['name']:<40} {verdict}")
    if not args.no_chart:
        png = chart.draw(results_dir, failed=failed)
        print(f"chart: {_relative(png)}")
    return 1 if failed else 0


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(common.REPO_DIR))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
