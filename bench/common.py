"""What every benchmark shares: the `--quick` / results options and the JSON result file.

A benchmark builds its argument parser, calls `add_options(parser)`, `apply_quick(parser, args, ...)`
after parsing, creates a `Recorder` before it starts measuring and calls `Recorder.write(...)` at the
end. The file it writes, `bench/results/<name>.json`, has this shape (`SCHEMA` is bumped whenever
a key changes meaning):

    {
      "schema": 1,
      "benchmark": "ingest",                      # the script's name
      "quick": false,                             # true: a --quick smoke run, sizes too small to judge
      "started_at": "2026-12-01T20:50:00Z",       # UTC
      "finished_at": "2026-12-01T20:52:10Z",
      "duration_s": 130.2,
      "command": ["bench/ingest.py", "--traces", "20000"],
      "git": {"commit": "43cf021...", "src_dirty": false},
      "machine": {"cpu_count": 2, "python": "3.11.7", "implementation": "CPython",
                  "platform": "Linux-...", "memory_mib": 24105,
                  "load_avg_start": [0.4, 0.7, 0.6], "load_avg_end": [1.9, 1.2, 0.8]},
      "parameters": {...},                        # the options the run used
      "figures": {...},                           # raw measurements, benchmark-specific keys
      "ratios": {"name": 0.93, ...},              # ours vs the bare baseline measured in the same run
      "targets": [{"name": "...", "description": "...", "value": 6900.0, "op": ">=",
                   "threshold": 5000, "unit": "events/s", "met": true}],
      "informational": [{"name": "...", "value": 12.3, "unit": "ms",      # recorded, no target yet
                         "group": "trace by id", "series": "p95"}]
    }

A --quick run writes to bench/results/quick/ instead (unless --results-dir is given), so a smoke
run never replaces the real figures.

`met` is null when the figure could not be measured (e.g. a single export size gives no growth).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCHEMA = 1
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
QUICK_DIR = RESULTS_DIR / "quick"  # --quick runs never overwrite the real figures
# How run_all runs them and the chart lists them.
ORDER = ("queue_throughput", "ingest", "export", "batch_export", "query", "isolation")
OPS = {">=": lambda v, t: v >= t, ">": lambda v, t: v > t, "<=": lambda v, t: v <= t, "<": lambda v, t: v < t}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark has on top of its own."""
    group = parser.add_argument_group("results")
    group.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny sizes for every size option left at its default; the result is labelled quick "
        f"and goes to {QUICK_DIR.relative_to(REPO_DIR)} unless --results-dir is given",
    )
    group.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where <name>.json is written (default: {RESULTS_DIR.relative_to(REPO_DIR)})",
    )
    group.add_argument("--no-record", action="store_true", help="print the figures only; write no JSON")


def apply_quick(parser: argparse.ArgumentParser, args: argparse.Namespace, sizes: dict[str, Any]) -> None:
    """With --quick, replace each size option still at its default by its tiny value."""
    if not getattr(args, "quick", False):
        return
    for dest, value in sizes.items():
        if getattr(args, dest) == parser.get_default(dest):
            setattr(args, dest, value)


def results_dir(args: argparse.Namespace) -> Path:
    """--results-dir, else bench/results (bench/results/quick for a --quick run)."""
    chosen = getattr(args, "results_dir", None)
    if chosen is not None:
        return Path(chosen)
    return QUICK_DIR if getattr(args, "quick", False) else RESULTS_DIR


def target(
    name: str, value: float | None, op: str, threshold: float, unit: str, description: str = ""
) -> dict[str, Any]:
    """One target: `value op threshold` (e.g. 0.93 >= 0.8). `value` None means not measured."""
    met = None if value is None else bool(OPS[op](value, threshold))
    return {
        "name": name,
        "description": description,
        "value": value,
        "op": op,
        "threshold": threshold,
        "unit": unit,
        "met": met,
    }


def info(name: str, value: float, unit: str, *, group: str | None = None, series: str | None = None) -> dict[str, Any]:
    """A recorded figure with no target yet; the chart draws entries of one `group` side by side
    (e.g. group "trace by id", series "p50" and "p95")."""
    return {"name": name, "value": value, "unit": unit, "group": group, "series": series}


def redact_url(url: str | None) -> str:
    """A server URL without its password (results are committed); None means the embedded default."""
    if not url:
        return "embedded"
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _memory_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _git() -> dict[str, Any]:
    def run(*cmd: str) -> str | None:
        try:
            done = subprocess.run(["git", *cmd], cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--", "src")
    found = {"commit": commit, "src_dirty": None if status is None else bool(status)}
    # The code measured is the tracehouse that imports (PYTHONPATH may point at another checkout).
    spec = importlib.util.find_spec("tracehouse")
    package = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if package is not None and not package.is_relative_to(REPO_DIR):
        tree = package.parent.parent  # <checkout>/src/tracehouse
        other = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        )
        found = {
            "commit": other.stdout.strip() or None,
            "src_dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
            "src_path": str(package),
            "bench_commit": commit,
        }
    return found


class Recorder:
    """Created when the benchmark starts (machine facts and load now), written when it ends."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        self.quick = bool(getattr(args, "quick", False))
        self.enabled = not getattr(args, "no_record", False)
        self.results_dir = results_dir(args)
        self.started = time.time()
        self.load_start = _load_avg()
        self.command = [_relative(sys.argv[0]), *sys.argv[1:]]

    def write(
        self,
        *,
        parameters: dict[str, Any],
        figures: dict[str, Any],
        ratios: dict[str, float | None],
        targets: list[dict[str, Any]],
        informational: list[dict[str, Any]] | None = None,
    ) -> Path | None:
        """Write bench/results/<name>.json and print a one-line verdict per target."""
        for t in targets:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT met")
            value = "-" if t["value"] is None else f"{t['value']:,.3f}".rstrip("0").rstrip(".")
            print(f"target {t['name']}: {value} {t['op']} {t['threshold']:,} {t['unit']}: {verdict}")
        if not self.enabled:
            return None
        finished = time.time()
        result = {
            "schema": SCHEMA,
            "benchmark": self.name,
            "quick": self.quick,
            "started_at": _utc(self.started),
            "finished_at": _utc(finished),
            "duration_s": round(finished - self.started, 1),
            "command": self.command,
            "git": _git(),
            "machine": {
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "platform": platform.platform(),
                "memory_mib": _memory_mib(),
                "load_avg_start": self.load_start,
                "load_avg_end": _load_avg(),
            },
            "parameters": parameters,
            "figures": figures,
            "ratios": ratios,
            "targets": targets,
            "informational": informational or [],
        }
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{self.name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_tidy(result), indent=2) + "\n")
        tmp.replace(path)
        print(f"results written to {_relative(str(path))}" + (" (quick run)" if self.quick else ""))
        return path


def _tidy(value: Any) -> Any:
    """Floats to 6 significant digits, so the committed files diff readably."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _tidy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tidy(v) for v in value]
    return value


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_DIR))
    except ValueError:
        return path


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every result file in the folder, known benchmarks in ORDER, then any others by name."""
    results = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "benchmark" in data and "targets" in data:
            results.append(data)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: (rank.get(r["benchmark"], len(ORDER)), r["benchmark"]))


def process_memory() -> dict[str, float]:
    """This process's resident memory now and at its peak (Linux VmRSS and VmHWM), in MiB."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = {field: int(status.get(field, "0 kB").split()[0]) for field in ("VmRSS", "VmHWM")}
    return {"rss_mib": kib["VmRSS"] / 1024, "hwm_mib": kib["VmHWM"] / 1024}


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    times = os.times()
    return times.user + times.system


def run_child(
    command: list[str], role: str, *, marker: str, drop_env: tuple[str, ...] = (), timeout: float = 3600
) -> dict[str, Any]:
    """Run one measuring child process; return the JSON it printed after `marker` (its last such
    line). The variables in `drop_env` are removed, so a child cannot be pointed elsewhere."""
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{role} process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len(marker) :]))
